package sds

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshsds/meshsds/sds/token"
)

// Authenticator decides who a stream or request is. It is called once per
// stream, with the node of the first request, from many goroutines at once.
// It returns the data plane's identity, or an *AuthError.
type Authenticator interface {
	Authenticate(ctx context.Context, node *corev3.Node) (*Identity, error)
}

// Prechecker is an Authenticator that can refuse a stream from its
// metadata alone, before its first request is read: nothing unauthenticated
// then reaches the server beyond the request headers. It is called from
// many goroutines at once and must be quick. It returns an *AuthError.
type Prechecker interface {
	// Precheck returns the identity the credential names; which node it
	// is for is checked later, by Authenticate.
	Precheck(ctx context.Context) (*Identity, error)
}

var _ Prechecker = (*TokenAuthenticator)(nil)

// AuthError is a refused authentication: a gRPC code, a short message for the
// client and a bounded reason for metrics.
type AuthError struct {
	Code   codes.Code
	Reason string
	Msg    string
}

func (e *AuthError) Error() string { return e.Msg }

// errRevoked refuses a token on its mesh's revocation list.
var errRevoked = &AuthError{codes.PermissionDenied, "revoked", "dataplane token revoked"}

// GRPCStatus makes an AuthError a gRPC status error.
func (e *AuthError) GRPCStatus() *status.Status { return status.New(e.Code, e.Msg) }

// TokenVerifier checks a dataplane token. It is called concurrently.
type TokenVerifier interface {
	Verify(raw string, now time.Time) (*token.Claims, error)
}

// TokenAuthenticator authenticates data planes by the dataplane token in the
// gRPC metadata "authorization: Bearer <token>" (or the token alone); the
// node id must be the token's "<mesh>.<name>".
//
// Envoy opens one stream per secret, each with the same token, and a fleet
// reconnects all at once: the claims of recently verified tokens are kept
// (by the token's SHA-256) so that a token's signature is checked once,
// not once per stream. Its validity period is still checked every time.
type TokenAuthenticator struct {
	Verifier TokenVerifier
	Now      func() time.Time

	mu       sync.Mutex
	verified map[[sha256.Size]byte]*token.Claims // current generation
	previous map[[sha256.Size]byte]*token.Claims // the one before
}

// verifiedGeneration is how many tokens one generation of the verified
// cache holds: at most twice this many are kept.
const verifiedGeneration = 8192

// verify checks raw, from the cache of verified tokens when it is there.
func (a *TokenAuthenticator) verify(raw string, now time.Time) (*token.Claims, error) {
	sum := sha256.Sum256([]byte(raw))
	a.mu.Lock()
	c := a.verified[sum]
	if c == nil {
		c = a.previous[sum]
	}
	a.mu.Unlock()
	if c != nil && !now.Before(c.IssuedAt) && now.Before(c.ExpiresAt) {
		return c, nil
	}
	c, err := a.Verifier.Verify(raw, now)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	if a.verified == nil || len(a.verified) >= verifiedGeneration {
		a.previous, a.verified = a.verified, make(map[[sha256.Size]byte]*token.Claims)
	}
	a.verified[sum] = c
	a.mu.Unlock()
	return c, nil
}

var _ Authenticator = (*TokenAuthenticator)(nil)

// Precheck implements Prechecker: the stream must carry a valid dataplane
// token, whichever node it turns out to be for.
func (a *TokenAuthenticator) Precheck(ctx context.Context) (*Identity, error) {
	claims, err := a.claims(ctx)
	if err != nil {
		return nil, err
	}
	return identityOf(claims), nil
}

// identityOf is the identity a verified token names.
func identityOf(claims *token.Claims) *Identity {
	return &Identity{Mesh: claims.Mesh, Name: claims.Name, Tags: claims.Tags, TokenID: claims.ID, Expires: claims.ExpiresAt}
}

// claims verifies the dataplane token of ctx's metadata.
func (a *TokenAuthenticator) claims(ctx context.Context) (*token.Claims, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 || vals[0] == "" {
		return nil, &AuthError{codes.Unauthenticated, "missing_token", "missing dataplane token: send it as gRPC metadata \"authorization: Bearer <token>\""}
	}
	raw, ok := bearerToken(vals[0])
	if !ok {
		return nil, &AuthError{codes.Unauthenticated, "malformed", "authorization metadata must be \"Bearer <token>\" or the token alone"}
	}
	claims, err := a.verify(raw, a.Now())
	if err != nil {
		return nil, &AuthError{codes.Unauthenticated, token.Reason(err), "invalid dataplane token: " + shortTokenError(err)}
	}
	return claims, nil
}

// Authenticate implements Authenticator.
func (a *TokenAuthenticator) Authenticate(ctx context.Context, node *corev3.Node) (*Identity, error) {
	claims, err := a.claims(ctx)
	if err != nil {
		return nil, err
	}
	if node.GetId() == "" {
		return nil, &AuthError{codes.InvalidArgument, "missing_node", "the first request must carry node.id \"<mesh>.<name>\""}
	}
	if err := token.ValidateTags(claims.Tags); err != nil {
		// Signed before tags were checked at issue: never into a certificate.
		return nil, &AuthError{codes.PermissionDenied, "bad_identity", "the dataplane token's tags cannot become a certificate: " + err.Error()}
	}
	id := identityOf(claims)
	if node.GetId() != id.NodeID() {
		reason := "other_mesh"
		if strings.HasPrefix(node.GetId(), claims.Mesh+".") {
			reason = "other_name"
		}
		return nil, &AuthError{codes.PermissionDenied, reason, "node id does not match the dataplane token"}
	}
	return id, nil
}

// bearerToken takes the token out of an authorization value: "Bearer
// <token>" (the scheme in any case, as HTTP has it), or the token alone, as
// Kuma's file-based metadata credentials send it.
func bearerToken(v string) (string, bool) {
	v = strings.TrimSpace(v)
	scheme, rest, hasScheme := strings.Cut(v, " ")
	if !hasScheme {
		return v, v != ""
	}
	if !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	rest = strings.TrimSpace(rest)
	return rest, rest != "" && !strings.ContainsAny(rest, " \t")
}

// shortTokenError keeps what the client is told to the classification: the
// detail (which may quote the token) stays in the server's log.
func shortTokenError(err error) string {
	for _, e := range []error{token.ErrExpired, token.ErrNotYetValid, token.ErrBadSignature, token.ErrMissingClaim, token.ErrMalformed} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "rejected"
}

// NoAuth trusts the node id: "<mesh>.<name>", split at the first dot, with
// the tag kuma.io/service taken from node.cluster (or the name). It exists for
// local development only.
type NoAuth struct{}

var _ Authenticator = NoAuth{}

// Authenticate implements Authenticator.
func (NoAuth) Authenticate(_ context.Context, node *corev3.Node) (*Identity, error) {
	mesh, name, ok := strings.Cut(node.GetId(), ".")
	if !ok || mesh == "" || name == "" {
		return nil, &AuthError{codes.InvalidArgument, "missing_node", "node.id must be \"<mesh>.<name>\""}
	}
	svc := node.GetCluster()
	if svc == "" {
		svc = name
	}
	tags := map[string][]string{ServiceTag: {svc}}
	if err := token.ValidateTags(tags); err != nil {
		return nil, &AuthError{codes.InvalidArgument, "bad_identity", "node.cluster (or the name) is the service: " + err.Error()}
	}
	return &Identity{Mesh: mesh, Name: name, Tags: tags}, nil
}
