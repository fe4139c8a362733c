package worker

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLoginTokens(t *testing.T) {
	secret := []byte("account-service-secret")
	now := time.Unix(1_800_000_000, 0)
	good := SignLogin(secret, "ann.smith", now.Add(time.Hour))
	if uid, err := VerifyLogin(secret, good, now, DefaultLoginSkew); err != nil || uid != "ann.smith" {
		t.Fatalf("VerifyLogin(good) = %q, %v", uid, err)
	}
	expired := SignLogin(secret, "ann", now.Add(-time.Minute))
	justExpired := SignLogin(secret, "ann", now.Add(-10*time.Second)) // within the skew
	if _, err := VerifyLogin(secret, justExpired, now, DefaultLoginSkew); err != nil {
		t.Errorf("a token 10 s past its expiry, within the skew: %v", err)
	}
	// Another user's name on a valid signature, another secret, a
	// tampered expiry, garbage.
	parts := strings.SplitN(good, ".", 4)
	forged := strings.Join([]string{parts[0], parts[1], parts[2], "bob"}, ".")
	later := strings.Join([]string{parts[0], "1900000000", parts[2], parts[3]}, ".")
	for name, tok := range map[string]string{
		"expired":      expired,
		"other user":   forged,
		"later expiry": later,
		"other secret": SignLogin([]byte("other"), "ann", now.Add(time.Hour)),
		"no uid":       SignLogin(secret, "", now.Add(time.Hour)),
		"garbage":      "ann",
		"empty":        "",
		"old version":  "v0" + good[2:],
	} {
		uid, err := VerifyLogin(secret, tok, now, DefaultLoginSkew)
		if !errors.Is(err, ErrBadLogin) || uid != "" {
			t.Errorf("%s: VerifyLogin = %q, %v; want ErrBadLogin", name, uid, err)
		}
		if err != nil && tok != "" && strings.Contains(err.Error(), tok) {
			t.Errorf("%s: error %q repeats the token", name, err)
		}
	}
	if _, err := VerifyLogin(nil, good, now, DefaultLoginSkew); err == nil {
		t.Error("VerifyLogin with no secret accepted a token")
	}
}
