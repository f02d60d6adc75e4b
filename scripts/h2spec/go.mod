// A wrapper module that installs h2spec (the HTTP/2 conformance tests of tests/tests/edge_h2spec.rs) with
// `go install tool` (scripts/test.sh). h2spec v2.2.1 has no go.mod of its own, so `go install ...@latest`
// would build it against whatever its dependencies are newest that day; this module pins them. Made with
// `go get -tool github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible`.
module hgw-h2spec-tool

go 1.26.0

tool github.com/summerwind/h2spec/cmd/h2spec

require (
	github.com/fatih/color v1.19.0 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/spf13/cobra v1.10.2 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	github.com/summerwind/h2spec v2.2.1+incompatible // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)
