package controller

import (
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// ServicePortName is the port of the ExpenseApp's Service that tenant Ingresses point at.
const ServicePortName = "http"

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
