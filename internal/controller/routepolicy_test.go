package controller

import "testing"

// The default policy refuses configuration snippets and authentication overrides of any ingress
// controller's prefix, and nothing else; an allowlist narrows it further; '*' spans '/'.
func TestRoutePolicy_annotations(t *testing.T) {
	def := &RoutePolicy{DeniedAnnotations: DefaultDeniedAnnotations}
	narrow := &RoutePolicy{DeniedAnnotations: DefaultDeniedAnnotations, AllowedAnnotations: []string{"cert-manager.io/*"}}
	for _, tt := range []struct {
		key             string
		byDef, byNarrow bool
	}{
		{"nginx.ingress.kubernetes.io/server-snippet", false, false},
		{"nginx.ingress.kubernetes.io/configuration-snippet", false, false},
		{"nginx.org/server-snippets", false, false},
		{"haproxy.org/backend-config-snippet", false, false},
		{"nginx.ingress.kubernetes.io/auth-url", false, false},
		{"nginx.ingress.kubernetes.io/auth-signin", false, false},
		{"nginx.ingress.kubernetes.io/global-auth-url", false, false},
		{"nginx.ingress.kubernetes.io/enable-global-auth", false, false},
		{"nginx.ingress.kubernetes.io/server-alias", false, false},
		{"haproxy-ingress.github.io/config-backend", false, false},
		{"NGINX.ingress.kubernetes.io/Server-Snippet", false, false},
		{"nginx.ingress.kubernetes.io/proxy-body-size", true, false},
		{"cert-manager.io/cluster-issuer", true, true},
		{"cert-manager.io/auth-issuer", false, false}, // denied wins over allowed
	} {
		if got := def.annotationAllowed(tt.key); got != tt.byDef {
			t.Errorf("default policy allows %s: %v, want %v", tt.key, got, tt.byDef)
		}
		if got := narrow.annotationAllowed(tt.key); got != tt.byNarrow {
			t.Errorf("allowlist policy allows %s: %v, want %v", tt.key, got, tt.byNarrow)
		}
	}
	open := &RoutePolicy{GatewayNamespaces: []string{"*"}}
	some := &RoutePolicy{GatewayNamespaces: []string{"gateways"}}
	if !def.gatewayAllowed("team", "") || !def.gatewayAllowed("team", "team") || def.gatewayAllowed("team", "gateways") ||
		!some.gatewayAllowed("team", "gateways") || some.gatewayAllowed("team", "other") || !open.gatewayAllowed("team", "other") {
		t.Error("Gateway namespaces: the app's own always, others only as listed, every one with \"*\"")
	}
}

// '*' matches any run of characters, none included, and nothing else is special.
func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, key string
		want         bool
	}{
		{"*snippet*", "nginx.ingress.kubernetes.io/server-snippet", true},
		{"*snippet*", "snippet", true},
		{"*/auth-*", "nginx.ingress.kubernetes.io/auth-url", true},
		{"*/auth-*", "nginx.ingress.kubernetes.io/oauth-url", false},
		{"cert-manager.io/*", "cert-manager.io/cluster-issuer", true},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"*a*a", "aa", true},
		{"exact.io/key", "exact.io/key", true},
		{"exact.io/key", "exact.io/keys", false},
		{"x.*", "x.y", true},
		{"x.*", "xay", false},
	} {
		if got := globMatch(c.pattern, c.key); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", c.pattern, c.key, got, c.want)
		}
	}
}
