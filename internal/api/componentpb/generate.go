package componentpb

// The generated files are committed: building needs no protoc. To
// regenerate after editing components.proto (protoc 3.21.12 from Debian's
// protobuf-compiler; the plugins at these exact versions):
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
//	go generate ./internal/api/componentpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative components.proto
