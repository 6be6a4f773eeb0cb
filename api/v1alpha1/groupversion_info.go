// Package v1alpha1 contains the API of Tenantry: the ExpenseApp and Tenant kinds of group tenantry.dev,
// the ClusterDatabases the platform team declares, the HostClaims the operator keeps, and the Backups
// of tenants.
// +kubebuilder:object:generate=true
// +groupName=tenantry.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "tenantry.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a runtime.Scheme. (apimachinery's own
	// builder: this package imports nothing of controller-runtime's, so that anyone can import it.)
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the kinds of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &ExpenseApp{}, &ExpenseAppList{}, &Tenant{}, &TenantList{}, &HostClaim{}, &HostClaimList{},
		&ClusterDatabase{}, &ClusterDatabaseList{}, &Backup{}, &BackupList{}, &Restore{}, &RestoreList{}, &ScheduledBackup{}, &ScheduledBackupList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
