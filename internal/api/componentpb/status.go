package componentpb

import (
	"net/http"

	"google.golang.org/grpc/codes"
)

// The gRPC service refuses what the HTTP/JSON API refuses, with the same
// messages: one table maps the API's HTTP statuses to gRPC codes (the
// server) and back (the client, whose callers look at statuses).
var statusCodes = []struct {
	status int
	code   codes.Code
}{
	{http.StatusBadRequest, codes.InvalidArgument},
	{http.StatusUnauthorized, codes.Unauthenticated},
	{http.StatusForbidden, codes.PermissionDenied},
	{http.StatusNotFound, codes.NotFound},
	{http.StatusConflict, codes.FailedPrecondition}, // AlreadyExists too, below
	{http.StatusRequestEntityTooLarge, codes.ResourceExhausted},
	{http.StatusNotImplemented, codes.Unimplemented},
	{http.StatusServiceUnavailable, codes.Unavailable},
	{http.StatusGatewayTimeout, codes.DeadlineExceeded},
	{http.StatusInternalServerError, codes.Internal},
}

// Code is the gRPC code of an answer the HTTP API gives status; Internal
// for statuses of 500 and more it does not name, InvalidArgument for
// other 4xx.
func Code(status int) codes.Code {
	for _, sc := range statusCodes {
		if sc.status == status {
			return sc.code
		}
	}
	if status >= 500 {
		return codes.Internal
	}
	return codes.InvalidArgument
}

// HTTPStatus is the HTTP status the API answers with for code.
func HTTPStatus(code codes.Code) int {
	if code == codes.AlreadyExists {
		return http.StatusConflict
	}
	for _, sc := range statusCodes {
		if sc.code == code {
			return sc.status
		}
	}
	return http.StatusInternalServerError
}
