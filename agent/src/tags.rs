//! Sharding tags: which APIs (and plans) a gateway deploys.
//!
//! Gravitee's rule: a gateway with no tags deploys everything. Otherwise the API's tags must intersect
//! the gateway's inclusion tags (when it has any) and must not intersect its exclusion tags (`!tag`).
//! Configuring the same tag as included and excluded is a configuration error.

#[derive(Debug, thiserror::Error)]
pub enum TagsError {
    #[error("sharding tag `{0}` is both included and excluded (`{0}` and `!{0}`)")]
    Conflict(String),
    #[error("sharding tag `!` names no tag")]
    EmptyExclusion,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardingTags {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl ShardingTags {
    pub fn parse(tags: &[String]) -> Result<ShardingTags, TagsError> {
        let mut parsed = ShardingTags::default();
        for tag in tags.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            match tag.strip_prefix('!') {
                Some(excluded) => {
                    let excluded = excluded.trim();
                    if excluded.is_empty() {
                        return Err(TagsError::EmptyExclusion);
                    }
                    parsed.exclude.push(excluded.to_owned());
                }
                None => parsed.include.push(tag.to_owned()),
            }
        }
        if let Some(both) = parsed.include.iter().find(|t| parsed.exclude.contains(t)) {
            return Err(TagsError::Conflict(both.clone()));
        }
        Ok(parsed)
    }

    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Whether an API carrying `api_tags` is deployed on this gateway.
    pub fn matches_api(&self, api_tags: &[String]) -> bool {
        if self.is_empty() {
            return true;
        }
        let included = self.include.is_empty() || api_tags.iter().any(|t| self.include.contains(t));
        let excluded = api_tags.iter().any(|t| self.exclude.contains(t));
        included && !excluded
    }

    /// Whether a plan is kept. A plan without tags is available on every gateway that deploys its API;
    /// a tagged plan follows the API rule.
    pub fn matches_plan(&self, plan_tags: &[String]) -> bool {
        plan_tags.is_empty() || self.matches_api(plan_tags)
    }

    /// The tags as given (`!` kept), for heartbeats and logs.
    pub fn to_list(&self) -> Vec<String> {
        self.include.iter().cloned().chain(self.exclude.iter().map(|t| format!("!{t}"))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> ShardingTags {
        ShardingTags::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }
    fn api(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_tags_deploys_everything() {
        assert!(tags(&[]).matches_api(&api(&[])));
        assert!(tags(&[]).matches_api(&api(&["internal"])));
    }

    #[test]
    fn inclusion_needs_an_intersection() {
        let gw = tags(&["internal", "eu"]);
        assert!(gw.matches_api(&api(&["eu"])));
        assert!(!gw.matches_api(&api(&["us"])));
        assert!(!gw.matches_api(&api(&[])));
        assert!(gw.matches_plan(&api(&[])));
        assert!(!gw.matches_plan(&api(&["us"])));
    }

    #[test]
    fn exclusion_wins() {
        let gw = tags(&["!private"]);
        assert!(gw.matches_api(&api(&[])));
        assert!(gw.matches_api(&api(&["public"])));
        assert!(!gw.matches_api(&api(&["public", "private"])));
    }

    #[test]
    fn conflicts_are_errors() {
        let err = ShardingTags::parse(&["a".into(), "!a".into()]).unwrap_err();
        assert_eq!(err.to_string(), "sharding tag `a` is both included and excluded (`a` and `!a`)");
        assert!(ShardingTags::parse(&["!".into()]).is_err());
    }
}
