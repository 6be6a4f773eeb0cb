package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// reconcileService keeps the Service tenant Ingresses point at: named after the app, port "http", and
// port "metrics" for Prometheus (the ServiceMonitor in config/prometheus scrapes it).
func (r *ExpenseAppReconciler) reconcileService(ctx context.Context, run *appRun) error {
	app := run.app
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: app.Name, Namespace: app.Namespace}}
	_, err := controllerutil.CreateOrUpdate(ctx, r.Client, svc, func() error {
		svc.Labels = mergeMaps(svc.Labels, appLabels(app))
		svc.Spec.Selector = map[string]string{"app.kubernetes.io/name": "tenantry-app", "app.kubernetes.io/instance": app.Name}
		svc.Spec.Ports = []corev1.ServicePort{{Name: ServicePortName, Port: appServicePort, TargetPort: intstr.FromString(ServicePortName)},
			{Name: MetricsPortName, Port: appMetricsPort, TargetPort: intstr.FromString(MetricsPortName)}}
		return controllerutil.SetControllerReference(app, svc, r.Scheme)
	})
	if err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("writing Service %s: %w", app.Name, err))
	}
	return nil
}
