// Package manifests builds and applies the operator's install manifests as kustomize (config/) renders
// them, so that tests and make dev run the operator under exactly the identity a cluster gives it: its
// ServiceAccount, bound to the (Cluster)Roles that ship, and nothing more. (Envtest's own client is
// cluster-admin, which would hide any permission the operator lacks.)
package manifests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// Kustomize builds a kustomization directory, as `kustomize build dir` does.
func Kustomize(dir string) ([]*unstructured.Unstructured, error) {
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	y, err := resources.AsYaml()
	if err != nil {
		return nil, err
	}
	return Decode(y)
}

// Decode splits a multi-document YAML stream into objects, skipping empty documents.
func Decode(y []byte) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(y), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, err
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// Select returns the objects of the kinds given, kind by kind in that order (so that a Namespace can
// come before what lives in it).
func Select(objs []*unstructured.Unstructured, kinds ...string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, k := range kinds {
		for _, o := range objs {
			if o.GetKind() == k {
				out = append(out, o)
			}
		}
	}
	return out
}

// RBACKinds are the kinds that make up the operator's identity: where it runs, who it is, what it may
// do; in the order to apply them.
var RBACKinds = []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}

// Apply creates or updates objs with server-side apply, as fieldOwner.
func Apply(ctx context.Context, c client.Client, fieldOwner string, objs []*unstructured.Unstructured) error {
	for _, o := range objs {
		o = o.DeepCopy()
		o.SetResourceVersion("")
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
	return nil
}

// Identity is the ServiceAccount the operator's pods run as.
type Identity struct {
	Namespace, ServiceAccount string
}

// UserName is the identity's name as the API server knows it.
func (id Identity) UserName() string {
	return fmt.Sprintf("system:serviceaccount:%s:%s", id.Namespace, id.ServiceAccount)
}

// Impersonate returns a copy of cfg whose requests act as the identity (cfg's user must be allowed to
// impersonate, as envtest's admin is), with the groups a ServiceAccount token carries.
func (id Identity) Impersonate(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: id.UserName(),
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + id.Namespace, "system:authenticated"}}
	return c
}

// OperatorIdentity finds the ServiceAccount of the operator's Deployment among objs.
func OperatorIdentity(objs []*unstructured.Unstructured) (Identity, error) {
	for _, o := range Select(objs, "Deployment") {
		var dep appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &dep); err != nil {
			return Identity{}, err
		}
		if dep.Labels["app.kubernetes.io/component"] == "operator" && dep.Spec.Template.Spec.ServiceAccountName != "" {
			return Identity{Namespace: dep.Namespace, ServiceAccount: dep.Spec.Template.Spec.ServiceAccountName}, nil
		}
	}
	return Identity{}, errors.New("no operator Deployment (app.kubernetes.io/component: operator) with a serviceAccountName")
}

// Kubeconfig returns a kubeconfig for cfg's server and credentials that acts as the identity, for an
// operator that runs as a process of its own.
func (id Identity) Kubeconfig(cfg *rest.Config) ([]byte, error) {
	imp := id.Impersonate(cfg)
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: imp.Host, CertificateAuthorityData: imp.CAData}
	kc.AuthInfos["operator"] = &clientcmdapi.AuthInfo{ClientCertificateData: imp.CertData, ClientKeyData: imp.KeyData,
		Token: imp.BearerToken, Impersonate: imp.Impersonate.UserName, ImpersonateGroups: imp.Impersonate.Groups}
	kc.Contexts["operator"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "operator"}
	kc.CurrentContext = "operator"
	return clientcmd.Write(*kc)
}

// ApplyIdentity applies the RBAC kinds of objs (see RBACKinds) and returns the operator's identity.
func ApplyIdentity(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) (Identity, error) {
	id, err := OperatorIdentity(objs)
	if err != nil {
		return Identity{}, err
	}
	return id, Apply(ctx, c, "tenantry-install", Select(objs, RBACKinds...))
}

// DatabaseSecret is the name of the admin Secret DeclareDatabase writes for a ClusterDatabase.
func DatabaseSecret(name string) string { return name + "-db-admin" }

// DeclareDatabase does what a platform team does to let namespaces use a database: it writes the
// database's admin connection string into a Secret of the operator's namespace (platform) and declares a
// ClusterDatabase of that name, selecting the namespaces given by name. Both are updated when they exist
// (a new port, more namespaces).
func DeclareDatabase(ctx context.Context, c client.Client, platform, name, uri string, namespaces ...string) error {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: DatabaseSecret(name), Namespace: platform}}
	if _, err := controllerutil.CreateOrUpdate(ctx, c, secret, func() error {
		secret.StringData = map[string]string{"uri": uri}
		return nil
	}); err != nil {
		return fmt.Errorf("writing Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	cdb := &tenantryv1.ClusterDatabase{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := controllerutil.CreateOrUpdate(ctx, c, cdb, func() error {
		cdb.Spec.SecretRef = tenantryv1.SecretKeyRef{Name: secret.Name, Key: "uri"}
		cdb.Spec.NamespaceSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn, Values: namespaces}}}
		return nil
	}); err != nil {
		return fmt.Errorf("declaring ClusterDatabase %s: %w", name, err)
	}
	return nil
}
