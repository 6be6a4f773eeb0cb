package controller

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"

	"tenantry.dev/tenantry/test/utils/pgcluster"
)

// The operator's metrics answer only callers the API server authenticates and authorizes: nobody
// without a token, not a ServiceAccount without the metrics-reader ClusterRole (config/rbac), and a
// ServiceAccount bound to it.
func TestMetricsOptions_secure(t *testing.T) {
	ctx := context.Background()
	port, err := pgcluster.FreePort()
	must(t, err)
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{Scheme: NewScheme(), HealthProbeBindAddress: "0",
		Metrics: MetricsOptions(fmt.Sprintf("127.0.0.1:%d", port), true)})
	must(t, err)
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- mgr.Start(mctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the manager stopped with %v", err)
		}
	}()

	// The metrics-reader ClusterRole exactly as shipped.
	b, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "metrics_reader_role.yaml"))
	must(t, err)
	reader := &rbacv1.ClusterRole{}
	must(t, yaml.Unmarshal(b, reader))
	reader.Name = fmt.Sprintf("metrics-reader-%d", port)
	must(t, k8s.Create(ctx, reader))

	ns := fmt.Sprintf("metrics-%d", port)
	must(t, k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	cs, err := kubernetes.NewForConfig(restConfig)
	must(t, err)
	token := func(sa string) string {
		t.Helper()
		must(t, k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns}}))
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		must(t, err)
		return tr.Status.Token
	}
	prometheus, stranger := token("prometheus"), token("stranger")
	must(t, k8s.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: reader.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: reader.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "prometheus", Namespace: ns}},
	}))

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // the operator's self-signed serving certificate
	get := func(token string) int {
		req, _ := http.NewRequest("GET", fmt.Sprintf("https://127.0.0.1:%d/metrics", port), nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := client.Do(req)
		if err != nil {
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}
	must(t, eventually(20*time.Second, func() error {
		if get("") == 0 {
			return errNotYet // not serving yet
		}
		return nil
	}))
	if got := get(""); got != http.StatusUnauthorized {
		t.Errorf("metrics without a token: %d, want 401", got)
	}
	if got := get(stranger); got != http.StatusForbidden {
		t.Errorf("metrics for a ServiceAccount without metrics-reader: %d, want 403", got)
	}
	// RBAC takes a moment to see the new binding.
	if err := eventually(10*time.Second, func() error {
		if get(prometheus) != http.StatusOK {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Errorf("metrics for a ServiceAccount bound to metrics-reader: %d, want 200", get(prometheus))
	}
}
