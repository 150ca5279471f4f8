module github.com/standby-dr/standby

go 1.26.8

require (
	github.com/klauspost/compress v1.18.2
	golang.org/x/sys v0.50.0
	gopkg.in/yaml.v3 v3.0.1
)
