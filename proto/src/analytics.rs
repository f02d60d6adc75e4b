//! Reading analytics batches: a metrics record's API-level fields travel once per batch, in the
//! batch's `apis` table, and the record points there (`MetricsRecord.api`, 1-based; 0 when the record
//! carries them itself, as dataplanes before the table did).

use crate::v1::{MetricsRecord, ReportApi, ReportRequest};

/// Response metadata an agent sets on `Analytics/Report` when it reads the batches' `apis` table. A
/// dataplane sends records that point into the table only on such a stream; to an agent without it
/// (an older one) every record carries its API's fields, so no record loses them.
pub const API_TABLE_METADATA: &str = "hgw-analytics-api-table";

/// A record pointed at an API its batch does not carry: the batch is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownApi {
    /// The record's `api`.
    pub index: u32,
    /// How many APIs the batch carries.
    pub apis: usize,
}

impl std::fmt::Display for UnknownApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a metrics record points at API {} of a batch that carries {}", self.index, self.apis)
    }
}

impl std::error::Error for UnknownApi {}

/// A record's API-level fields, borrowed from wherever its batch keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiFields<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub api_type: &'a str,
    pub organization_id: &'a str,
    pub environment_id: &'a str,
    pub entrypoint_id: &'a str,
}

impl ReportRequest {
    /// The table entry a record's `api` names: `None` for 0 (the record carries its API's fields).
    fn table_entry(&self, index: u32) -> Result<Option<&ReportApi>, UnknownApi> {
        if index == 0 {
            return Ok(None);
        }
        usize::try_from(index - 1)
            .ok()
            .and_then(|i| self.apis.get(i))
            .map(Some)
            .ok_or(UnknownApi { index, apis: self.apis.len() })
    }

    /// `record`'s API-level fields: its entry in this batch's `apis`, or its own when it has none.
    pub fn api_of<'a>(&'a self, record: &'a MetricsRecord) -> Result<ApiFields<'a>, UnknownApi> {
        Ok(match self.table_entry(record.api)? {
            Some(api) => ApiFields {
                id: &api.id,
                name: &api.name,
                api_type: &api.r#type,
                organization_id: &api.organization_id,
                environment_id: &api.environment_id,
                entrypoint_id: &api.entrypoint_id,
            },
            None => ApiFields {
                id: &record.api_id,
                name: &record.api_name,
                api_type: &record.api_type,
                organization_id: &record.organization_id,
                environment_id: &record.environment_id,
                entrypoint_id: &record.entrypoint_id,
            },
        })
    }

    /// Copies each record's API-level fields from the table into the record, for readers that want
    /// whole records. On a malformed batch nothing is changed.
    pub fn expand_apis(&mut self) -> Result<(), UnknownApi> {
        let entries = self
            .records
            .iter()
            .map(|record| self.table_entry(record.api).map(Option::<&ReportApi>::cloned))
            .collect::<Result<Vec<_>, _>>()?;
        for (record, entry) in self.records.iter_mut().zip(entries) {
            if let Some(api) = entry {
                record.set_api(api);
            }
        }
        Ok(())
    }
}

impl MetricsRecord {
    /// Writes `api`'s fields into the record, which then points at no table entry: the whole-record
    /// form, for a reader (or an agent) without the batch's table.
    pub fn set_api(&mut self, api: ReportApi) {
        let ReportApi { id, name, r#type, organization_id, environment_id, entrypoint_id } = api;
        self.api = 0;
        self.api_id = id;
        self.api_name = name;
        self.api_type = r#type;
        self.organization_id = organization_id;
        self.environment_id = environment_id;
        self.entrypoint_id = entrypoint_id;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> ReportRequest {
        ReportRequest {
            apis: vec![ReportApi {
                id: "a1".into(),
                name: "Orders".into(),
                r#type: "proxy".into(),
                organization_id: "org".into(),
                environment_id: "env".into(),
                entrypoint_id: "http-proxy".into(),
            }],
            records: vec![
                MetricsRecord { request_id: "r1".into(), api: 1, ..Default::default() },
                MetricsRecord { request_id: "r2".into(), api_id: "own".into(), ..Default::default() },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_record_takes_its_api_from_the_table_or_keeps_its_own() {
        let b = batch();
        assert_eq!(b.api_of(&b.records[0]).unwrap().name, "Orders");
        assert_eq!(b.api_of(&b.records[1]).unwrap().id, "own");
        let mut b = b;
        b.expand_apis().unwrap();
        assert_eq!(
            (b.records[0].api, b.records[0].api_id.as_str(), b.records[0].entrypoint_id.as_str()),
            (0, "a1", "http-proxy")
        );
        assert_eq!(b.records[1].api_id, "own");
    }

    #[test]
    fn a_record_pointing_past_the_table_is_an_error_and_changes_nothing() {
        let mut b = batch();
        b.records.push(MetricsRecord { api: 2, ..Default::default() });
        let before = b.clone();
        assert_eq!(b.expand_apis(), Err(UnknownApi { index: 2, apis: 1 }));
        assert_eq!(b, before);
        b.records[2].api = u32::MAX;
        assert!(b.api_of(&b.records[2]).is_err());
    }
}
