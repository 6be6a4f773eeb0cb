package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RestoreSpec is the desired state of a Restore.
type RestoreSpec struct {
	// tenant is the Tenant (in the same namespace) to put back. It cannot change.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="tenant is immutable"
	Tenant LocalRef `json:"tenant"`

	// backup is the Completed Backup of that Tenant to put it back to. It cannot change.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="backup is immutable"
	Backup LocalRef `json:"backup"`

	// keepPrevious is how long the tenant's schema as it was before the restore is kept (out of the
	// tenant's reach, under the name in status.previousSchema) before it is dropped. Deleting the Restore drops it
	// sooner.
	// +kubebuilder:default="168h"
	// +optional
	KeepPrevious *metav1.Duration `json:"keepPrevious,omitempty"`
}

// RestorePhase is how far a Restore has come.
// +kubebuilder:validation:Enum=Pending;Running;Completed;Failed
type RestorePhase string

// Restore phases. Completed and Failed are final: a Restore runs once.
const (
	RestorePending   RestorePhase = "Pending"
	RestoreRunning   RestorePhase = "Running"
	RestoreCompleted RestorePhase = "Completed"
	RestoreFailed    RestorePhase = "Failed"
)

// RestoreStatus is the observed state of a Restore.
type RestoreStatus struct {
	// conditions: Ready is True once the tenant serves the backup's data, Reconciling while the restore
	// runs (its message says how far), Stalled when it failed (the tenant was left as it was).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// observedGeneration is the generation of the spec this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// phase is Pending, Running, Completed or Failed.
	// +optional
	Phase RestorePhase `json:"phase,omitempty"`
	// startedAt is when the restore began; stoppedAt when it completed or failed.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// +optional
	StoppedAt *metav1.Time `json:"stoppedAt,omitempty"`
	// writesPaused is how long the tenant's writes waited, or failed, while its schema was swapped for
	// the restored one: the only time the restore takes anything from the tenant.
	// +optional
	WritesPaused *metav1.Duration `json:"writesPaused,omitempty"`
	// rows is the number of rows restored.
	// +optional
	Rows int64 `json:"rows,omitempty"`
	// schemaVersion is the backup's schema version (the restored schema was then migrated to the
	// release's).
	// +optional
	SchemaVersion int64 `json:"schemaVersion,omitempty"`
	// previousSchema is where the tenant's schema as it was before the restore is kept, out of the
	// tenant's reach, until keepUntil.
	// +optional
	PreviousSchema string `json:"previousSchema,omitempty"`
	// keepUntil is when previousSchema is dropped.
	// +optional
	KeepUntil *metav1.Time `json:"keepUntil,omitempty"`
	// previousDropped says previousSchema is gone.
	// +optional
	PreviousDropped bool `json:"previousDropped,omitempty"`
	// error says why a Failed restore failed.
	// +optional
	Error string `json:"error,omitempty"`
}

// Restore puts one Tenant back to one of its Backups, in place: the backup is restored into a new
// schema beside the tenant's, checked, migrated to the release's version, then swapped in for the
// tenant's schema in one transaction (writes wait, or fail, only for the swap). A restore that fails
// leaves the tenant as it was. The schema it replaced is kept, out of the tenant's reach, for
// spec.keepPrevious.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=tenantry
// +kubebuilder:printcolumn:name="Tenant",type=string,JSONPath=`.spec.tenant.name`
// +kubebuilder:printcolumn:name="Backup",type=string,JSONPath=`.spec.backup.name`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Rows",type=integer,JSONPath=`.status.rows`
// +kubebuilder:printcolumn:name="Paused",type=string,JSONPath=`.status.writesPaused`
// +kubebuilder:printcolumn:name="Status",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
// +kubebuilder:printcolumn:name="Previous",type=string,priority=1,JSONPath=`.status.previousSchema`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Restore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state of the restore.
	Spec RestoreSpec `json:"spec"`
	// status is the observed state of the restore.
	// +optional
	Status RestoreStatus `json:"status,omitempty"`
}

// RestoreList is a list of Restores.
// +kubebuilder:object:root=true
type RestoreList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Restore `json:"items"`
}

// RestoreFinalizer lets the operator drop the schema a Restore kept before the Restore goes.
const RestoreFinalizer = "tenantry.dev/restore"
