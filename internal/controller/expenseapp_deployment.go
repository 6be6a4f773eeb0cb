package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/registry"
)

// reconcileDeployment keeps the app's Deployment. The image moves to spec.image only when every tenant
// is at the schema version this release needs; until then the running image stays, and tenants already
// migrated keep being served by it.
func (r *ExpenseAppReconciler) reconcileDeployment(ctx context.Context, run *appRun) error {
	app, target, secretHash := run.app, run.target, SecretHash(run.secret)
	image := r.image(app)
	if image == "" {
		err := errors.New("spec.image is empty and the operator has no --default-app-image: set the app's image " +
			"(the Tenantry image holds it as /app)")
		setAppCondition(app, tenantryv1.ConditionDeployed, metav1.ConditionFalse, tenantryv1.ReasonNoImage, err.Error())
		return stallErr(tenantryv1.ReasonNoImage, time.Minute, err)
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: app.Name, Namespace: app.Namespace}}
	_, err := controllerutil.CreateOrUpdate(ctx, r.Client, dep, func() error {
		if running := currentImage(dep); running != "" && running != image && app.Status.TenantsAtTarget < app.Status.Tenants {
			image = running // not yet: the new image needs every tenant at the target version
		}
		labels := appLabels(app)
		dep.Labels = mergeMaps(dep.Labels, labels)
		dep.Spec.Replicas = app.Spec.Replicas
		dep.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{
			"app.kubernetes.io/name": "tenantry-app", "app.kubernetes.io/instance": app.Name}}
		dep.Spec.Template.Labels = labels
		dep.Spec.Template.Annotations = mergeMaps(dep.Spec.Template.Annotations,
			map[string]string{AnnotationSchemaVersion: fmt.Sprint(target), AnnotationAppSecretHash: secretHash})
		dep.Spec.Template.Spec = appPodSpec(app, image)
		return controllerutil.SetControllerReference(app, dep, r.Scheme)
	})
	if err != nil {
		err = fmt.Errorf("writing Deployment %s: %w", app.Name, err)
		setAppCondition(app, tenantryv1.ConditionDeployed, metav1.ConditionFalse, tenantryv1.ReasonAPIServerError, err.Error())
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	app.Status.Image = currentImage(dep)
	app.Status.ReadyReplicas = dep.Status.ReadyReplicas
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: app.Name, Namespace: app.Namespace}}
	if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, pdb, func() error {
		pdb.Labels = mergeMaps(pdb.Labels, appLabels(app))
		pdb.Spec.MaxUnavailable = ptr.To(intstr.FromInt32(1))
		pdb.Spec.Selector = dep.Spec.Selector
		return controllerutil.SetControllerReference(app, pdb, r.Scheme)
	}); err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, fmt.Errorf("writing PodDisruptionBudget %s: %w", app.Name, err))
	}
	return nil
}

// image is the app image an ExpenseApp asks for: its spec.image, else the operator's default.
func (r *ExpenseAppReconciler) image(app *tenantryv1.ExpenseApp) string {
	if app.Spec.Image != "" {
		return app.Spec.Image
	}
	return r.DefaultImage
}

func currentImage(dep *appsv1.Deployment) string {
	for _, c := range dep.Spec.Template.Spec.Containers {
		if c.Name == "app" {
			return c.Image
		}
	}
	return ""
}

func appPodSpec(app *tenantryv1.ExpenseApp, image string) corev1.PodSpec {
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: intstr.FromString(ServicePortName)}}, PeriodSeconds: 10}
	}
	return corev1.PodSpec{
		// The app never talks to the API server: a pod that is taken over holds no token for it.
		AutomountServiceAccountToken: ptr.To(false),
		SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		Containers: []corev1.Container{{
			Name:    "app",
			Image:   image,
			Command: []string{"/app"},
			Args:    []string{fmt.Sprintf("--http-addr=:%d", appPort), fmt.Sprintf("--metrics-addr=:%d", appMetricsPort)},
			Env: []corev1.EnvVar{{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: appSecretName(app)}, Key: tenantryv1.AppSecretURIKey}}},
				{Name: "SHARD_DATABASE_URLS", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: appSecretName(app)}, Key: tenantryv1.AppSecretShardsKey,
					Optional: ptr.To(true)}}},
				{Name: "DEVICE_KEY", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: appSecretName(app)}, Key: deviceKeyKey,
					Optional: ptr.To(true)}}},
				{Name: "NOTIFY_CHANNEL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: appSecretName(app)}, Key: channelKey}}},
				{Name: "CITUS_ROUTING", Value: citusRouting(app)},
				{Name: "TRUSTED_PROXIES", Value: strings.Join(app.Spec.TrustedProxies, ",")}},
			Ports: []corev1.ContainerPort{{Name: ServicePortName, ContainerPort: appPort},
				{Name: MetricsPortName, ContainerPort: appMetricsPort}},
			Resources:      app.Spec.Resources,
			LivenessProbe:  probe("/healthz"),
			ReadinessProbe: probe("/readyz"),
			SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
				RunAsNonRoot: ptr.To(true), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
		}},
	}
}

// citusRouting is the app's --citus-routing for the ExpenseApp's spec.database.citusRouting.
func citusRouting(app *tenantryv1.ExpenseApp) string {
	if app.Spec.Database.CitusRouting == tenantryv1.CitusRoutingCoordinator {
		return registry.CitusRouteCoordinator
	}
	return registry.CitusRouteWorkers
}

// rolloutDone, once every other step has passed: Ready once the Deployment runs spec.image with every
// replica updated and available.
func (r *ExpenseAppReconciler) rolloutDone(ctx context.Context, run *appRun) error {
	app := run.app
	dep := &appsv1.Deployment{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: app.Namespace, Name: app.Name}, dep); err != nil {
		return retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	want := ptr.Deref(app.Spec.Replicas, 1)
	done := currentImage(dep) == r.image(app) && dep.Status.ObservedGeneration >= dep.Generation &&
		dep.Status.UpdatedReplicas >= want && dep.Status.AvailableReplicas >= want
	if !done {
		msg := fmt.Sprintf("Deployment %s: %d of %d replicas updated and available", dep.Name, dep.Status.AvailableReplicas, want)
		setAppCondition(app, tenantryv1.ConditionDeployed, metav1.ConditionFalse, tenantryv1.ReasonProgressing, msg)
		return waitErr(tenantryv1.ReasonProgressing, 10*time.Second, "%s", msg)
	}
	setAppCondition(app, tenantryv1.ConditionDeployed, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
		fmt.Sprintf("Deployment %s runs %s on %d replica(s)%s", dep.Name, r.image(app), want, runBy(dep)))
	run.result = ctrl.Result{RequeueAfter: appSecretRecheck}
	if run.requeue > 0 {
		run.result.RequeueAfter = min(run.result.RequeueAfter, run.requeue)
	}
	return nil
}

// AnnotationRunBy on a Deployment names what runs its pods when that is not a kubelet: `make dev`
// runs the app's container on the developer's machine and reports it in the Deployment's status.
const AnnotationRunBy = "tenantry.dev/run-by"

// runBy says who runs the Deployment's pods, when it is not a kubelet.
func runBy(dep *appsv1.Deployment) string {
	if by := dep.Annotations[AnnotationRunBy]; by != "" {
		return ", run by " + by
	}
	return ""
}
