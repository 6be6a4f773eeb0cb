package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete

// reconcileNetworkPolicy keeps the app's NetworkPolicy when spec.networkPolicy is enabled, and deletes
// the one it made when it is not.
func (r *ExpenseAppReconciler) reconcileNetworkPolicy(ctx context.Context, run *appRun) error {
	app := run.app
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: app.Name, Namespace: app.Namespace}}
	if app.Spec.NetworkPolicy == nil || !app.Spec.NetworkPolicy.Enabled {
		err := r.Get(ctx, types.NamespacedName{Namespace: app.Namespace, Name: app.Name}, np)
		if err != nil || !metav1.IsControlledBy(np, app) {
			return client.IgnoreNotFound(err)
		}
		if err := client.IgnoreNotFound(r.Delete(ctx, np)); err != nil {
			return retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("deleting NetworkPolicy %s: %w", app.Name, err))
		}
		return nil
	}
	if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, np, func() error {
		np.Labels = mergeMaps(np.Labels, appLabels(app))
		np.Spec = desiredNetworkPolicy(app)
		return controllerutil.SetControllerReference(app, np, r.Scheme)
	}); err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("writing NetworkPolicy %s: %w", app.Name, err))
	}
	return nil
}

// desiredNetworkPolicy lets the app's pods be reached on their HTTP port from the ingress namespaces
// and on their metrics port from the metrics namespaces, and reach only the database ports (on the
// database addresses, if given) and DNS.
func desiredNetworkPolicy(app *tenantryv1.ExpenseApp) networkingv1.NetworkPolicySpec {
	spec := app.Spec.NetworkPolicy
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	from := func(namespaces []string) []networkingv1.NetworkPolicyPeer {
		return []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn, Values: namespaces}}}}}
	}
	port := func(p intstr.IntOrString, proto *corev1.Protocol) networkingv1.NetworkPolicyPort {
		return networkingv1.NetworkPolicyPort{Port: ptr.To(p), Protocol: proto}
	}
	np := networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "tenantry-app",
			"app.kubernetes.io/instance": app.Name}},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: from(spec.IngressNamespaces),
			Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(appPort), &tcp)}}},
	}
	if len(spec.MetricsNamespaces) > 0 {
		np.Ingress = append(np.Ingress, networkingv1.NetworkPolicyIngressRule{From: from(spec.MetricsNamespaces),
			Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(appMetricsPort), &tcp)}})
	}
	database := networkingv1.NetworkPolicyEgressRule{}
	for _, p := range spec.DatabasePorts {
		database.Ports = append(database.Ports, port(intstr.FromInt32(p), &tcp))
	}
	for _, cidr := range spec.DatabaseCIDRs {
		database.To = append(database.To, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr}})
	}
	dns := networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{
		port(intstr.FromInt32(53), &udp), port(intstr.FromInt32(53), &tcp)}}
	np.Egress = []networkingv1.NetworkPolicyEgressRule{database, dns}
	return np
}
