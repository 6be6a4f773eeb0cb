package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// reconcileRoute routes the tenant's hosts to the app's Service: through an Ingress (one rule per host,
// TLS as the app's spec.ingress asks), or, when the app sets spec.gateway, through a Gateway API
// HTTPRoute on its Gateways. The route of the other kind, if the tenant had one, goes.
func (r *TenantReconciler) reconcileRoute(ctx context.Context, run *tenantRun) error {
	t, app := run.t, run.app
	if app.Spec.Gateway == nil {
		if err := r.reconcileIngress(ctx, t, app); err != nil {
			return err
		}
		if r.GatewayAPI {
			return r.deleteOwned(ctx, t, &gwapiv1.HTTPRoute{})
		}
		return nil
	}
	if !r.GatewayAPI {
		msg := fmt.Sprintf("ExpenseApp %s routes through the Gateway API (spec.gateway), but the operator found no "+
			"HTTPRoute kind (gateway.networking.k8s.io/v1) when it started: install the Gateway API CRDs, then restart the operator", app.Name)
		setCondition(t, tenantryv1.ConditionRouted, metav1.ConditionFalse, tenantryv1.ReasonGatewayAPIMissing, msg)
		return stallErr(tenantryv1.ReasonGatewayAPIMissing, 5*time.Minute, errors.New(msg))
	}
	parents := r.RoutePolicy.gatewayParents(app)
	if len(parents) == 0 {
		msg := fmt.Sprintf("none of ExpenseApp %s's Gateways (spec.gateway.parentRefs) is in a namespace its tenants' routes "+
			"may attach to (the operator's --gateway-namespaces): name a Gateway of namespace %s, or ask the platform team to allow one",
			app.Name, app.Namespace)
		setCondition(t, tenantryv1.ConditionRouted, metav1.ConditionFalse, tenantryv1.ReasonNotAllowed, msg)
		return stallErr(tenantryv1.ReasonNotAllowed, 5*time.Minute, errors.New(msg))
	}
	route := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: t.Name, Namespace: t.Namespace}}
	op, err := controllerutil.CreateOrUpdate(ctx, r.Client, route, func() error {
		desired := desiredHTTPRoute(t, app, parents)
		route.Labels = mergeMaps(route.Labels, desired.Labels)
		route.Spec = desired.Spec
		return controllerutil.SetControllerReference(t, route, r.Scheme)
	})
	if err != nil {
		setCondition(t, tenantryv1.ConditionRouted, metav1.ConditionFalse, tenantryv1.ReasonRouteFailed, err.Error())
		return retryErr(tenantryv1.ReasonRouteFailed, fmt.Errorf("writing HTTPRoute %s: %w", t.Name, err))
	}
	if op != controllerutil.OperationResultNone {
		waitForCache(ctx, r.Client, route)
	}
	if err := r.deleteOwned(ctx, t, &networkingv1.Ingress{}); err != nil {
		return err
	}
	t.Status.URL = tenantURL(t, app)
	if refused := routeRefusal(route); refused != "" {
		setCondition(t, tenantryv1.ConditionRouted, metav1.ConditionFalse, tenantryv1.ReasonRouteNotAccepted, refused)
		return waitErr(tenantryv1.ReasonRouteNotAccepted, time.Minute, "%s", refused)
	}
	gateways := make([]string, 0, len(parents))
	for _, p := range parents {
		gateways = append(gateways, p.Name)
	}
	setCondition(t, tenantryv1.ConditionRouted, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
		fmt.Sprintf("HTTPRoute %s attaches %d host(s) to Gateway %s for Service %s", t.Name, len(t.Spec.Hosts),
			strings.Join(gateways, ", "), app.Name))
	return nil
}

// reconcileIngress keeps the tenant's Ingress: one rule per host to the app's Service.
func (r *TenantReconciler) reconcileIngress(ctx context.Context, t *tenantryv1.Tenant, app *tenantryv1.ExpenseApp) error {
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: t.Name, Namespace: t.Namespace}}
	op, err := controllerutil.CreateOrUpdate(ctx, r.Client, ing, func() error {
		desired := desiredIngress(t, app, r.RoutePolicy.ingressAnnotations(app))
		ing.Labels = mergeMaps(ing.Labels, desired.Labels)
		ing.Annotations = mergeMaps(ing.Annotations, desired.Annotations)
		for k := range ing.Annotations { // also one an earlier policy (or release) let through
			if !r.RoutePolicy.annotationAllowed(k) {
				delete(ing.Annotations, k)
			}
		}
		ing.Spec = desired.Spec
		return controllerutil.SetControllerReference(t, ing, r.Scheme)
	})
	if err != nil {
		setCondition(t, tenantryv1.ConditionRouted, metav1.ConditionFalse, tenantryv1.ReasonIngressFailed, err.Error())
		return retryErr(tenantryv1.ReasonIngressFailed, fmt.Errorf("writing Ingress %s: %w", t.Name, err))
	}
	if op != controllerutil.OperationResultNone {
		waitForCache(ctx, r.Client, ing)
	}
	t.Status.URL = tenantURL(t, app)
	setCondition(t, tenantryv1.ConditionRouted, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
		fmt.Sprintf("Ingress %s routes %d host(s) to Service %s", t.Name, len(t.Spec.Hosts), app.Name))
	return nil
}

// routeKinds are the kinds of route a tenant may have.
func (r *TenantReconciler) routeKinds() []client.Object {
	if r.GatewayAPI {
		return []client.Object{&networkingv1.Ingress{}, &gwapiv1.HTTPRoute{}}
	}
	return []client.Object{&networkingv1.Ingress{}}
}

// deleteRoute deletes the tenant's route of obj's kind: the one named after it that it controls, or
// that carries the tenant's labels (a deletion that orphans dependents takes the owner reference off).
func (r *TenantReconciler) deleteRoute(ctx context.Context, t *tenantryv1.Tenant, obj client.Object) error {
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: t.Name}, obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	labels := obj.GetLabels()
	if !metav1.IsControlledBy(obj, t) && (labels[LabelManagedBy] != ManagedBy || labels[LabelTenant] != labelValue(t.Name)) {
		return nil
	}
	if err := client.IgnoreNotFound(r.Delete(ctx, obj, client.Preconditions{UID: ptr.To(obj.GetUID())})); err != nil {
		return fmt.Errorf("deleting the tenant's route %s: %w", t.Name, err)
	}
	return nil
}

// deleteOwned deletes the tenant's object of obj's kind (named after the tenant), if the cache holds
// one and the tenant controls it: never someone else's object of the same name.
func (r *TenantReconciler) deleteOwned(ctx context.Context, t *tenantryv1.Tenant, obj client.Object) error {
	if err := r.Get(ctx, types.NamespacedName{Namespace: t.Namespace, Name: t.Name}, obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(obj, t) {
		return nil
	}
	if err := client.IgnoreNotFound(r.Delete(ctx, obj)); err != nil {
		return retryErr(tenantryv1.ReasonRouteFailed, fmt.Errorf("deleting the tenant's former route %s: %w", t.Name, err))
	}
	return nil
}

// tenantURL is the tenant's primary host, over https when the app's Ingresses terminate TLS.
func tenantURL(t *tenantryv1.Tenant, app *tenantryv1.ExpenseApp) string {
	scheme := "http"
	if app.Spec.Gateway != nil && app.Spec.Gateway.HTTPS || app.Spec.Gateway == nil && app.Spec.Ingress.TLS.Enabled {
		scheme = "https"
	}
	return scheme + "://" + t.Spec.Hosts[0] + "/"
}

// ServicePortName is the port of the ExpenseApp's Service that tenant Ingresses and HTTPRoutes point at,
// and appServicePort its number.
const (
	ServicePortName = "http"
	appServicePort  = 80
)

// desiredIngress is the Ingress of a tenant: a rule per host, all to the app's Service, with the app's
// annotations the route policy lets through.
func desiredIngress(t *tenantryv1.Tenant, app *tenantryv1.ExpenseApp, annotations map[string]string) *networkingv1.Ingress {
	pathType := networkingv1.PathTypePrefix
	backend := networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
		Name: app.Name, Port: networkingv1.ServiceBackendPort{Name: ServicePortName},
	}}
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{
			Name: t.Name, Namespace: t.Namespace, Labels: ownedLabels(t), Annotations: annotations,
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

// desiredHTTPRoute is the Gateway API route of a tenant: its hosts, on the app's Gateways the route
// policy allows (parents), all to the app's Service.
func desiredHTTPRoute(t *tenantryv1.Tenant, app *tenantryv1.ExpenseApp, parents []tenantryv1.GatewayParentRef) *gwapiv1.HTTPRoute {
	route := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: t.Name, Namespace: t.Namespace, Labels: ownedLabels(t)}}
	for _, p := range parents {
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
