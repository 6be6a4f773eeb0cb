package controller

import (
	"fmt"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// ServicePortName is the port of the ExpenseApp's Service that tenant Ingresses and HTTPRoutes point at,
// and appServicePort its number.
const (
	ServicePortName = "http"
	appServicePort  = 80
)

// desiredIngress is the Ingress of a tenant: a rule per host, all to the app's Service.
func desiredIngress(t *tenantryv1.Tenant, app *tenantryv1.ExpenseApp) *networkingv1.Ingress {
	pathType := networkingv1.PathTypePrefix
	backend := networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
		Name: app.Name, Port: networkingv1.ServiceBackendPort{Name: ServicePortName},
	}}
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{
			Name: t.Name, Namespace: t.Namespace, Labels: ownedLabels(t), Annotations: app.Spec.Ingress.Annotations,
		},
	}
	for _, h := range t.Spec.Hosts {
		ing.Spec.Rules = append(ing.Spec.Rules, networkingv1.IngressRule{
			Host: h,
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &pathType, Backend: backend}},
			}},
		})
	}
	if app.Spec.Ingress.ClassName != "" {
		class := app.Spec.Ingress.ClassName
		ing.Spec.IngressClassName = &class
	}
	if tls := app.Spec.Ingress.TLS; tls.Enabled {
		secret := tls.SecretName
		if secret == "" {
			secret = t.Name + "-tls"
		}
		ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: t.Spec.Hosts, SecretName: secret}}
	}
	return ing
}

// desiredHTTPRoute is the Gateway API route of a tenant: its hosts, on the app's Gateways, all to the
// app's Service.
func desiredHTTPRoute(t *tenantryv1.Tenant, app *tenantryv1.ExpenseApp) *gwapiv1.HTTPRoute {
	route := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: t.Name, Namespace: t.Namespace, Labels: ownedLabels(t)}}
	for _, p := range app.Spec.Gateway.ParentRefs {
		ref := gwapiv1.ParentReference{Name: gwapiv1.ObjectName(p.Name)}
		if p.Namespace != "" {
			ns := gwapiv1.Namespace(p.Namespace)
			ref.Namespace = &ns
		}
		if p.SectionName != "" {
			section := gwapiv1.SectionName(p.SectionName)
			ref.SectionName = &section
		}
		route.Spec.ParentRefs = append(route.Spec.ParentRefs, ref)
	}
	for _, h := range t.Spec.Hosts {
		route.Spec.Hostnames = append(route.Spec.Hostnames, gwapiv1.Hostname(h))
	}
	port := gwapiv1.PortNumber(appServicePort)
	route.Spec.Rules = []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{
		BackendObjectReference: gwapiv1.BackendObjectReference{Name: gwapiv1.ObjectName(app.Name), Port: &port}}}}}}
	return route
}

// routeRefusal returns why a Gateway refused the route (a parent's Accepted condition False), or "" when
// none did. A route no Gateway controller has looked at yet is not refused.
func routeRefusal(route *gwapiv1.HTTPRoute) string {
	for _, p := range route.Status.Parents {
		if c := meta.FindStatusCondition(p.Conditions, string(gwapiv1.RouteConditionAccepted)); c != nil && c.Status == metav1.ConditionFalse &&
			c.ObservedGeneration >= route.Generation {
			return fmt.Sprintf("Gateway %s refused HTTPRoute %s: %s: %s", p.ParentRef.Name, route.Name, c.Reason, c.Message)
		}
	}
	return ""
}
