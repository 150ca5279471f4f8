package trust

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

func TestRenew(t *testing.T) {
	ts := mustServer(t)
	id, dir := ts.join(t, control.RoleTarget, "mt1")
	before := mustLoad(t, dir)
	if NeedsRenewal(before.Cert.Leaf, time.Now()) {
		t.Fatal("a fresh certificate needs renewal")
	}
	got, err := Renew(context.Background(), dir, ts.URL)
	if err != nil || got != id {
		t.Fatalf("renew: %v, %v; want %v", got, err, id)
	}
	after := mustLoad(t, dir)
	if after.Identity != id || SerialString(after.Cert.Leaf) == SerialString(before.Cert.Leaf) {
		t.Errorf("renewed: %v serial %s, before serial %s", after.Identity, SerialString(after.Cert.Leaf), SerialString(before.Cert.Leaf))
	}
	if after.Cert.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(before.Cert.Leaf.PublicKey) {
		t.Error("renewal kept the old key")
	}
	if len(after.Cert.Leaf.DNSNames) != 1 || after.Cert.Leaf.DNSNames[0] != "mt1" {
		t.Errorf("renewed certificate names %v, want the joined host names kept", after.Cert.Leaf.DNSNames)
	}
	srv, _ := ts.Store.GetServer(context.Background(), id.ID)
	if srv.CertSerial != SerialString(after.Cert.Leaf) {
		t.Errorf("store has serial %s, want the renewed %s", srv.CertSerial, SerialString(after.Cert.Leaf))
	}
	for _, f := range []string{FilesIn(dir).Cert + nextSuffix, FilesIn(dir).Key + nextSuffix} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s left behind", f)
		}
	}

	// Revoked: refused with a readable error, and the files are untouched.
	ts.Store.revoke(t, id.ID)
	_, err = Renew(context.Background(), dir, ts.URL)
	if !errors.Is(err, ErrRevoked) || !strings.Contains(err.Error(), "certificate of server target/"+id.ID+" is revoked") {
		t.Fatalf("renew when revoked: %v, want ErrRevoked", err)
	}
	if l := mustLoad(t, dir); SerialString(l.Cert.Leaf) != SerialString(after.Cert.Leaf) {
		t.Error("a refused renewal changed the certificate")
	}
}

func TestRenewRefusesRemovedServer(t *testing.T) {
	ts := mustServer(t)
	id, dir := ts.join(t, control.RoleAgent, "web01")
	ts.Store.mu.Lock()
	delete(ts.Store.servers, id.ID)
	ts.Store.mu.Unlock()
	if _, err := Renew(context.Background(), dir, ts.URL); !errors.Is(err, ErrRevoked) {
		t.Errorf("renew of a removed server: %v, want refused as revoked", err)
	}
	// Directly, the registrar says why.
	_, csr, _ := newKeyAndCSR(nil)
	if _, err := ts.Reg.Renew(context.Background(), id, csr); !errors.Is(err, ErrNotJoined) {
		t.Errorf("Registrar.Renew of a removed server: %v, want ErrNotJoined", err)
	}
}

func TestNeedsRenewal(t *testing.T) {
	nb := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(90 * 24 * time.Hour)}
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{{0, false}, {59 * 24 * time.Hour, false}, {61 * 24 * time.Hour, true}, {100 * 24 * time.Hour, true}} {
		if got := NeedsRenewal(c, nb.Add(tc.at)); got != tc.want {
			t.Errorf("NeedsRenewal at +%v = %v, want %v", tc.at, got, tc.want)
		}
	}
}

func TestInterruptedInstall(t *testing.T) {
	ts := mustServer(t)
	_, dir := ts.join(t, control.RoleAgent, "web01")
	old := mustLoad(t, dir)
	f := FilesIn(dir)

	// A crash after staging the key only: the staged key is discarded.
	key, _, _ := newKeyAndCSR(nil)
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := writeFileAtomic(f.Key+nextSuffix, pemBytes("PRIVATE KEY", kd), 0o600); err != nil {
		t.Fatal(err)
	}
	if l := mustLoad(t, dir); SerialString(l.Cert.Leaf) != SerialString(old.Cert.Leaf) {
		t.Error("a lone staged key replaced the identity")
	}
	if _, err := os.Stat(f.Key + nextSuffix); err == nil {
		t.Error("lone staged key left behind")
	}

	// A crash after installing the new key but before the certificate:
	// Load finishes the installation.
	key2, csr2, _ := newKeyAndCSR(nil)
	resp, err := ts.Reg.Renew(context.Background(), old.Identity, csr2)
	if err != nil {
		t.Fatal(err)
	}
	kd2, _ := x509.MarshalPKCS8PrivateKey(key2)
	if err := writeFileAtomic(f.Key, pemBytes("PRIVATE KEY", kd2), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(f.Cert+nextSuffix, resp.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	l := mustLoad(t, dir)
	if SerialString(l.Cert.Leaf) != SerialString(leafOf(t, resp.CertPEM)) {
		t.Error("Load did not finish the interrupted installation")
	}
}

func TestLoadRefusesReadableKey(t *testing.T) {
	ts := mustServer(t)
	_, dir := ts.join(t, control.RoleAgent, "web01")
	if err := os.Chmod(FilesIn(dir).Key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("Load with a readable key: %v, want a chmod hint", err)
	}
}

func TestCRL(t *testing.T) {
	ts := mustServer(t)
	id, dir := ts.join(t, control.RoleAgent, "web01")
	_, dir2 := ts.join(t, control.RoleAgent, "web02")
	l, l2 := mustLoad(t, dir), mustLoad(t, dir2)
	ts.Store.revoke(t, id.ID)

	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: pinnedConfig(ts.CA.Pin())}}).Get(ts.URL + CRLPath)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("GET %s: %s %s", CRLPath, resp.Status, resp.Header.Get("Content-Type"))
	}
	rv, err := ParseCRL(der, ts.CA.Cert(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !rv.Revoked(SerialString(l.Cert.Leaf), Identity{}) || rv.Revoked(SerialString(l2.Cert.Leaf), Identity{}) {
		t.Error("the CRL does not list exactly the revoked server's serial")
	}
	if _, err := ParseCRL(der, mustCA(t).Cert(), time.Now()); !errors.Is(err, ErrWrongCA) {
		t.Errorf("CRL checked against another CA: %v, want ErrWrongCA", err)
	}
	if _, err := ParseCRL(der, ts.CA.Cert(), time.Now().Add(CRLValidity+time.Hour)); err == nil || !strings.Contains(err.Error(), "stale") {
		t.Errorf("stale CRL: %v, want refused", err)
	}
	if _, err := ParseCRL([]byte("junk"), ts.CA.Cert(), time.Now()); !errors.Is(err, ErrMalformed) {
		t.Errorf("junk CRL: %v, want ErrMalformed", err)
	}
	if _, err := ts.CA.CRL([]string{"xyz"}, time.Now()); !errors.Is(err, ErrMalformed) {
		t.Errorf("CRL of a bad serial: %v", err)
	}
}
