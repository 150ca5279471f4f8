// Package componentpb is the protocol between components (agents,
// process servers, master targets) and the configuration server:
// standby.control.v1.Components, a gRPC service served on the API's
// HTTPS listener beside the users' HTTP/JSON API. components.proto is the
// definition; components.pb.go and components_grpc.pb.go are generated
// from it (generate.go says how) and committed. convert.go maps its
// messages to and from the control-plane types, so that the server and
// the client share one mapping.
package componentpb
