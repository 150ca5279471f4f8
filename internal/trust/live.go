package trust

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync/atomic"
	"time"
)

// Live is a role's joined identity while the role runs: the certificate
// its listeners present and its dialers send is the current one, and
// RunRenewal renews it before it expires (Renewer) and swaps it in, so a
// long-running role never has to restart for a new certificate.
type Live struct {
	cur atomic.Pointer[Local]
	// Now is the clock renewal is decided by; nil: time.Now (tests).
	Now func() time.Time
}

// NewLive starts from l.
func NewLive(l *Local) *Live {
	v := &Live{}
	v.cur.Store(l)
	return v
}

// Local is the current identity.
func (v *Live) Local() *Local { return v.cur.Load() }

// GetCertificate is for a tls.Config's GetCertificate (listeners).
func (v *Live) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return &v.cur.Load().Cert, nil
}

// GetClientCertificate is for a tls.Config's GetClientCertificate
// (dialers).
func (v *Live) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return &v.cur.Load().Cert, nil
}

// Serve returns a copy of tc (built by ServerTLS or ClientTLS) that
// presents the current certificate at each handshake instead of the one
// fixed in its Certificates.
func (v *Live) Serve(tc *tls.Config) *tls.Config {
	tc = tc.Clone()
	tc.Certificates = nil
	tc.GetCertificate, tc.GetClientCertificate = v.GetCertificate, v.GetClientCertificate
	return tc
}

// RunRenewal renews the identity in dir with the server at serverURL when
// a third of its validity is left (checked every `every`; 0: an hour) and
// swaps the new one in, until ctx ends.
func (v *Live) RunRenewal(ctx context.Context, dir, serverURL string, every time.Duration, log *slog.Logger) {
	r := &Renewer{Dir: dir, ServerURL: serverURL, Every: every, Log: log, Now: v.Now, OnRenew: func(l *Local) {
		v.cur.Store(l)
		if log != nil {
			log.Info("certificate renewed", "identity", l.Identity.String(), "expires", l.Cert.Leaf.NotAfter)
		}
	}}
	r.Run(ctx)
}
