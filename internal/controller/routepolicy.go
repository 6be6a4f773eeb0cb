package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// RoutePolicy is what the platform team lets an ExpenseApp, written by whoever has rights in its
// namespace, ask of the cluster's shared routing: which of its spec.ingress.annotations reach its
// tenants' Ingresses, and the Gateways of which namespaces its tenants' HTTPRoutes attach to. Without
// it, rights in one namespace reach the ingress controller's configuration for every host (a
// server-snippet is code the controller runs) and any Gateway of the cluster.
//
// What the policy refuses is left out of every tenant's route, and the ExpenseApp is Stalled with
// NotAllowed, naming it.
type RoutePolicy struct {
	// DeniedAnnotations are patterns of annotation keys never copied; '*' matches any run of
	// characters, '/' included.
	DeniedAnnotations []string
	// AllowedAnnotations, when not empty, are the patterns of the only keys copied (the denied ones still
	// not).
	AllowedAnnotations []string
	// GatewayNamespaces are the namespaces, besides the ExpenseApp's own, whose Gateways its tenants'
	// routes may attach to; "*" allows every namespace.
	GatewayNamespaces []string
}

// DefaultDeniedAnnotations are the annotation keys the operator never copies unless told otherwise:
// configuration snippets and raw configuration (code or settings the ingress controller applies, for
// every host it serves), overrides of authentication (an external auth URL sees every request's
// credentials; enable-global-auth turns the platform's off) and aliases (hosts no HostClaim holds).
var DefaultDeniedAnnotations = []string{"*snippet*", "*/auth-*", "*global-auth*", "*/server-alias*", "*/config-*"}

// globMatch reports whether key matches pattern, where '*' matches any run of characters, whatever
// the case. (It runs for every annotation at every tenant's reconcile: no regular expression.)
func globMatch(pattern, key string) bool {
	parts := strings.Split(strings.ToLower(pattern), "*")
	key = strings.ToLower(key)
	if len(parts) == 1 {
		return key == parts[0]
	}
	if !strings.HasPrefix(key, parts[0]) {
		return false
	}
	key = key[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(key, mid)
		if i < 0 {
			return false
		}
		key = key[i+len(mid):]
	}
	return len(key) >= len(last) && strings.HasSuffix(key, last)
}

func matchesAny(patterns []string, key string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return globMatch(p, key) })
}

// annotationAllowed says whether the policy lets an ExpenseApp put this annotation on its Ingresses.
func (p *RoutePolicy) annotationAllowed(key string) bool {
	if p == nil {
		return true
	}
	if matchesAny(p.DeniedAnnotations, key) {
		return false
	}
	return len(p.AllowedAnnotations) == 0 || matchesAny(p.AllowedAnnotations, key)
}

// gatewayAllowed says whether a route of an ExpenseApp in namespace appNS may attach to a Gateway in
// namespace ns ("" is the app's own).
func (p *RoutePolicy) gatewayAllowed(appNS, ns string) bool {
	if ns == "" || ns == appNS || p == nil {
		return true
	}
	return slices.Contains(p.GatewayNamespaces, "*") || slices.Contains(p.GatewayNamespaces, ns)
}

// ingressAnnotations are the app's Ingress annotations the policy lets through.
func (p *RoutePolicy) ingressAnnotations(app *tenantryv1.ExpenseApp) map[string]string {
	var out map[string]string
	for k, v := range app.Spec.Ingress.Annotations {
		if p.annotationAllowed(k) {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// gatewayParents are the app's Gateways the policy lets its routes attach to.
func (p *RoutePolicy) gatewayParents(app *tenantryv1.ExpenseApp) []tenantryv1.GatewayParentRef {
	var out []tenantryv1.GatewayParentRef
	for _, ref := range app.Spec.Gateway.ParentRefs {
		if p.gatewayAllowed(app.Namespace, ref.Namespace) {
			out = append(out, ref)
		}
	}
	return out
}

// refusal says what of the app's spec the policy refuses, and what to do about it; "" when nothing.
func (p *RoutePolicy) refusal(app *tenantryv1.ExpenseApp) string {
	var refused []string
	if app.Spec.Gateway == nil { // Ingress annotations count only while tenants are routed by Ingresses
		var keys []string
		for k := range app.Spec.Ingress.Annotations {
			if !p.annotationAllowed(k) {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		if len(keys) > 0 {
			refused = append(refused, fmt.Sprintf("Ingress annotation(s) %s are not copied onto tenant Ingresses "+
				"(the operator's --denied-ingress-annotations and --allowed-ingress-annotations)", strings.Join(keys, ", ")))
		}
	} else {
		var gateways []string
		for _, ref := range app.Spec.Gateway.ParentRefs {
			if !p.gatewayAllowed(app.Namespace, ref.Namespace) {
				gateways = append(gateways, ref.Namespace+"/"+ref.Name)
			}
		}
		if len(gateways) > 0 {
			refused = append(refused, fmt.Sprintf("Gateway(s) %s are in namespaces tenant routes of namespace %s may not "+
				"attach to (the operator's --gateway-namespaces)", strings.Join(gateways, ", "), app.Namespace))
		}
	}
	if len(refused) == 0 {
		return ""
	}
	return strings.Join(refused, "; ") + ": remove them from the ExpenseApp, or ask the platform team to allow them"
}

// reconcileRoutePolicy stalls the app with NotAllowed while its spec asks for routing the route policy
// refuses: its tenants are routed without it (reconcileRoute), and the app says so.
func (r *ExpenseAppReconciler) reconcileRoutePolicy(_ context.Context, run *appRun) error {
	if msg := r.RoutePolicy.refusal(run.app); msg != "" {
		return stallErr(tenantryv1.ReasonNotAllowed, 5*time.Minute, errors.New(msg))
	}
	return nil
}
