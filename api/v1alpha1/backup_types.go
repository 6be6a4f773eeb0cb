package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ObjectStore is an S3-compatible bucket that holds backups: AWS S3, or a self-hosted store (Ceph's
// radosgw, SeaweedFS) at endpointURL.
type ObjectStore struct {
	// destinationPath is where backups go, as s3://bucket or s3://bucket/prefix. Each backup is written
	// under <destinationPath>/<namespace>/<tenant>/<backup>-<uid>/.
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^/].*)?$`
	// +kubebuilder:validation:XValidation:rule="!self.substring(5).contains('//') && !self.matches('/[.][.]?(/|$)')",message="destinationPath has no empty, . or .. segment"
	DestinationPath string `json:"destinationPath"`

	// endpointURL is the store's address, http(s)://host[:port], for a store other than AWS S3.
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^https?://[^/?#@]+/?$`
	// +optional
	EndpointURL string `json:"endpointURL,omitempty"`

	// region of the bucket; us-east-1 when empty.
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[a-z0-9-]*$`
	// +optional
	Region string `json:"region,omitempty"`

	// forcePathStyle addresses the bucket in the request's path (http://host/bucket/key) rather than
	// its host name (http://bucket.host/key), as most self-hosted stores need.
	// +optional
	ForcePathStyle bool `json:"forcePathStyle,omitempty"`

	// credentials names a Secret in the ExpenseApp's namespace holding AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, if the keys are temporary).
	Credentials LocalSecretRef `json:"credentials"`
}

// LocalSecretRef names a Secret in the namespace of the object that holds the reference.
type LocalSecretRef struct {
	// name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	SecretName string `json:"secretName"`
}

// Keys of an ObjectStore's credentials Secret.
const (
	ObjectStoreAccessKeyID     = "AWS_ACCESS_KEY_ID"
	ObjectStoreSecretAccessKey = "AWS_SECRET_ACCESS_KEY"
	ObjectStoreSessionToken    = "AWS_SESSION_TOKEN"
)

// AppBackupSpec is where an ExpenseApp's tenants are backed up.
type AppBackupSpec struct {
	// objectStore is the bucket every Backup of this app's tenants is written to.
	ObjectStore ObjectStore `json:"objectStore"`
}

// LocalRef names an object in the same namespace.
type LocalRef struct {
	// name of the object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// BackupSpec is the desired state of a Backup.
type BackupSpec struct {
	// tenant is the Tenant (in the same namespace) to back up. Its ExpenseApp's spec.backup.objectStore
	// says where the backup goes. It cannot change.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="tenant is immutable"
	Tenant LocalRef `json:"tenant"`

	// keepFor is how long the backup is kept once it completed: then the Backup deletes itself, and
	// its files with it. Unset keeps it until it is deleted (a ScheduledBackup's keep.last may delete
	// it sooner).
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="keepFor is immutable"
	// +optional
	KeepFor *metav1.Duration `json:"keepFor,omitempty"`
}

// BackupPhase is how far a Backup has come.
// +kubebuilder:validation:Enum=Pending;Running;Completed;Failed
type BackupPhase string

// Backup phases. Completed and Failed are final: a Backup is taken once; a new one is a new object.
const (
	BackupPending   BackupPhase = "Pending"
	BackupRunning   BackupPhase = "Running"
	BackupCompleted BackupPhase = "Completed"
	BackupFailed    BackupPhase = "Failed"
)

// BackupStatus is the observed state of a Backup.
type BackupStatus struct {
	// conditions: Ready is True once the backup is complete in the object store, Reconciling while it
	// is being taken, and Stalled when it failed (the message says why).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// observedGeneration is the generation of the spec this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// phase is Pending, Running, Completed or Failed.
	// +optional
	Phase BackupPhase `json:"phase,omitempty"`
	// startedAt is when the snapshot was taken.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// stoppedAt is when the backup completed or failed.
	// +optional
	StoppedAt *metav1.Time `json:"stoppedAt,omitempty"`
	// duration is how long the backup took, from the snapshot to its manifest.
	// +optional
	Duration *metav1.Duration `json:"duration,omitempty"`

	// destinationPath is where the backup is, as s3://bucket/prefix/<namespace>/<tenant>/<backup>-<uid>/:
	// its manifest.json and one compressed file per table.
	// +optional
	DestinationPath string `json:"destinationPath,omitempty"`
	// tenantUID is the UID of the Tenant backed up: a Tenant deleted and made again under the same name
	// is another tenant.
	// +optional
	TenantUID string `json:"tenantUID,omitempty"`
	// schemaVersion is the tenant schema's version in the snapshot; the backup restores on any release
	// whose migrations reach it.
	// +optional
	SchemaVersion int64 `json:"schemaVersion,omitempty"`
	// tables is the number of tables in the backup.
	// +optional
	Tables int32 `json:"tables,omitempty"`
	// rows is the number of rows in the backup, over every table.
	// +optional
	Rows int64 `json:"rows,omitempty"`
	// size is the number of bytes the backup takes in the object store, compressed.
	// +optional
	Size int64 `json:"size,omitempty"`
	// expiresAt is when a backup with spec.keepFor is deleted.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// error says why a Failed backup failed.
	// +optional
	Error string `json:"error,omitempty"`
}

// Backup is one backup of one Tenant: a consistent snapshot of its schema, read on the tenant's own
// session and streamed, compressed, to its ExpenseApp's object store with a manifest (the tenant's
// identity, schema version, and each table's rows, size and checksum). Deleting a Backup deletes what
// it wrote to the store.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=tenantry
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 200",message="a Backup name is at most 200 characters"
// +kubebuilder:printcolumn:name="Tenant",type=string,JSONPath=`.spec.tenant.name`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Version",type=integer,JSONPath=`.status.schemaVersion`
// +kubebuilder:printcolumn:name="Rows",type=integer,JSONPath=`.status.rows`
// +kubebuilder:printcolumn:name="Size",type=integer,JSONPath=`.status.size`
// +kubebuilder:printcolumn:name="Duration",type=string,priority=1,JSONPath=`.status.duration`
// +kubebuilder:printcolumn:name="Location",type=string,priority=1,JSONPath=`.status.destinationPath`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Backup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state of the backup.
	Spec BackupSpec `json:"spec"`
	// status is the observed state of the backup.
	// +optional
	Status BackupStatus `json:"status,omitempty"`
}

// BackupList is a list of Backups.
// +kubebuilder:object:root=true
type BackupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Backup `json:"items"`
}

// BackupFinalizer lets the operator delete what a Backup wrote to its object store before the Backup goes.
const BackupFinalizer = "tenantry.dev/backup"

// BackupRetention says which of a schedule's backups are kept.
// +kubebuilder:validation:XValidation:rule="has(self.last) || has(self.for)",message="keep names last, for, or both"
type BackupRetention struct {
	// last keeps the newest that many completed backups of each tenant; older ones are deleted.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	Last *int32 `json:"last,omitempty"`
	// for keeps each backup that long after it completed (its spec.keepFor), also after its tenant
	// is deleted.
	// +optional
	For *metav1.Duration `json:"for,omitempty"`
}

// ScheduledBackupSpec is the desired state of a ScheduledBackup.
// +kubebuilder:validation:XValidation:rule="has(self.tenant) != has(self.app)",message="a schedule names either a tenant or an app"
type ScheduledBackupSpec struct {
	// schedule is when backups are taken: a cron expression of six fields, seconds first (as
	// CloudNativePG's), in UTC; e.g. "0 0 2 * * *" every day at 02:00.
	// +kubebuilder:validation:MinLength=11
	// +kubebuilder:validation:MaxLength=100
	Schedule string `json:"schedule"`

	// tenant backs up one Tenant of this namespace.
	// +optional
	Tenant *LocalRef `json:"tenant,omitempty"`

	// app backs up every Tenant of this ExpenseApp (of this namespace) that no ScheduledBackup names
	// by itself: the app's default for its tenants.
	// +optional
	App *LocalRef `json:"app,omitempty"`

	// keep says which backups are kept.
	Keep BackupRetention `json:"keep"`

	// suspend stops new backups; those taken are kept by keep.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// immediate takes the first backups as soon as the schedule is created, not at its first time.
	// +optional
	Immediate bool `json:"immediate,omitempty"`
}

// ScheduledBackupStatus is the observed state of a ScheduledBackup.
type ScheduledBackupStatus struct {
	// conditions: Ready is True while the schedule runs; Stalled says why it cannot (an invalid
	// schedule).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// observedGeneration is the generation of the spec this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// lastScheduleTime is when backups were last due and created.
	// +optional
	LastScheduleTime *metav1.Time `json:"lastScheduleTime,omitempty"`
	// nextScheduleTime is when backups are due next.
	// +optional
	NextScheduleTime *metav1.Time `json:"nextScheduleTime,omitempty"`
	// lastBackups are the Backups created last time.
	// +optional
	LastBackups []string `json:"lastBackups,omitempty"`
}

// ScheduledBackup takes Backups of one Tenant, or of every Tenant of an ExpenseApp, on a schedule, and
// keeps the newest ones (keep.last) or each for a time (keep.for). Its Backups carry the labels
// tenantry.dev/scheduled-backup and tenantry.dev/tenant.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=tenantry
// +kubebuilder:printcolumn:name="Schedule",type=string,JSONPath=`.spec.schedule`
// +kubebuilder:printcolumn:name="Tenant",type=string,JSONPath=`.spec.tenant.name`
// +kubebuilder:printcolumn:name="App",type=string,JSONPath=`.spec.app.name`
// +kubebuilder:printcolumn:name="Suspend",type=boolean,JSONPath=`.spec.suspend`
// +kubebuilder:printcolumn:name="Last",type=date,JSONPath=`.status.lastScheduleTime`
// +kubebuilder:printcolumn:name="Next",type=string,priority=1,JSONPath=`.status.nextScheduleTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ScheduledBackup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state of the schedule.
	Spec ScheduledBackupSpec `json:"spec"`
	// status is the observed state of the schedule.
	// +optional
	Status ScheduledBackupStatus `json:"status,omitempty"`
}

// ScheduledBackupList is a list of ScheduledBackups.
// +kubebuilder:object:root=true
type ScheduledBackupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ScheduledBackup `json:"items"`
}

// LabelScheduledBackup is the label on a Backup that names the ScheduledBackup that took it.
const LabelScheduledBackup = "tenantry.dev/scheduled-backup"
