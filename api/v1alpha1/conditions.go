package v1alpha1

// Condition types. Ready is the summary; Reconciling and Stalled are "abnormal-true" (kstatus): present
// only while work is under way or blocked. The remaining types report one step each.
const (
	ConditionReady             = "Ready"
	ConditionReconciling       = "Reconciling"
	ConditionStalled           = "Stalled"
	ConditionSchemaReady       = "SchemaReady"
	ConditionMigrationsApplied = "MigrationsApplied"
	ConditionRegistered        = "Registered"
	ConditionRouted            = "Routed"
	ConditionAdminReady        = "AdminReady"
	ConditionDatabaseReady     = "DatabaseReady"
	ConditionDeployed          = "Deployed"
	ConditionFleetMigrated     = "FleetMigrated"
	ConditionShardsReady       = "ShardsReady"
	// ConditionMoving is True while a Tenant moves between shards (its message says how far), False
	// when a move is blocked.
	ConditionMoving = "Moving"
	// ConditionSchemaDrift is True when the Tenant's schema differs from the one its release's migrations
	// make, False when it was compared and matches; it is informational and never makes a Tenant less
	// Ready.
	ConditionSchemaDrift = "SchemaDrift"
	// ConditionSourceCopied is True once a Tenant's spec.source (a backup, or another tenant) has filled
	// its schema, False while it waits for it or when it failed (the message says why).
	ConditionSourceCopied = "SourceCopied"
)

// Condition reasons. Each names one situation, and a reconciler sets no reason that is not here
// (TestReasons_documentedAndUsed).
const (
	// ReasonSucceeded: the step's work is done.
	ReasonSucceeded = "Succeeded"
	// ReasonMatchesRelease: the schema holds exactly what the release's migrations make.
	ReasonMatchesRelease = "MatchesRelease"
	// ReasonSchemaDrifted: the schema has extra, missing or changed objects, none of them code.
	ReasonSchemaDrifted = "SchemaDrifted"
	// ReasonCompareFailed: the schema could not be read to compare it (a lock held on its tables, the
	// database away); it is tried again.
	ReasonCompareFailed = "CompareFailed"
	// ReasonCodePlanted: the schema holds code the release does not have (a function, view, trigger,
	// rule, policy or operator), which runs when the app uses it.
	ReasonCodePlanted = "CodePlanted"
	// ReasonProgressing: the step's work is under way (a Deployment rolling out, a reconcile running).
	ReasonProgressing = "Progressing"
	// ReasonAppNotFound: the Tenant's spec.appRef names no ExpenseApp in its namespace.
	ReasonAppNotFound = "AppNotFound"
	// ReasonSecretNotFound: a Secret the spec names does not exist.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonInvalidSecret: a Secret the spec names exists but lacks the key it names, or holds nothing.
	ReasonInvalidSecret = "InvalidSecret"
	// ReasonDatabaseError: a statement failed, or the database could not be reached (the message names a
	// timeout when one ran out); the operator tries again.
	ReasonDatabaseError = "DatabaseError"
	// ReasonAPIServerError: a request to the Kubernetes API server failed (a conflict, a timeout).
	ReasonAPIServerError = "APIServerError"
	// ReasonMigrationFailed: a migration failed on the tenant's schema, which stays at its last version.
	ReasonMigrationFailed = "MigrationFailed"
	// ReasonSchemaVersionUnknown: the tenant's schema holds tables but no version table, or a version
	// table ahead of its registry row and of the release, so which of the release's migrations it holds
	// cannot be told (it was changed by hand).
	ReasonSchemaVersionUnknown = "SchemaVersionUnknown"
	// ReasonHostConflict: a host the Tenant claims belongs to another tenant.
	ReasonHostConflict = "HostConflict"
	// ReasonSchemaConflict: the schema or role the Tenant's identity derives exists and belongs to
	// someone else.
	ReasonSchemaConflict = "SchemaConflict"
	// ReasonRoleConflict: the ExpenseApp's login role (or the operator's tenant login) exists and
	// belongs to someone else, another ExpenseApp of the same name or a role made by hand.
	ReasonRoleConflict = "RoleConflict"
	// ReasonIngressFailed: writing or deleting the tenant's Ingress failed.
	ReasonIngressFailed = "IngressFailed"
	// ReasonRouteFailed: writing or deleting the tenant's HTTPRoute (or a former route) failed.
	ReasonRouteFailed = "RouteFailed"
	// ReasonRouteNotAccepted: a Gateway refused the tenant's HTTPRoute; the message has its reason.
	ReasonRouteNotAccepted = "RouteNotAccepted"
	// ReasonGatewayAPIMissing: the app routes through the Gateway API, whose CRDs the cluster lacks.
	ReasonGatewayAPIMissing = "GatewayAPIMissing"
	// ReasonNotAllowed: the ExpenseApp asks for routing the operator's route policy refuses (an Ingress
	// annotation such as a configuration snippet, a Gateway in another namespace); it is left out of
	// every tenant's route, and the message names it. Or it names a database its namespace may not use:
	// a ClusterDatabase that does not select the namespace or allow that use, or a Secret of its own
	// namespace when the operator takes databases only from ClusterDatabases.
	ReasonNotAllowed = "NotAllowed"
	// ReasonDatabaseNotDeclared: the ExpenseApp names a ClusterDatabase that does not exist.
	ReasonDatabaseNotDeclared = "DatabaseNotDeclared"
	// ReasonAdminFailed: the tenant's first admin user or its Secret could not be written.
	ReasonAdminFailed = "AdminFailed"
	// ReasonDeletionBlocked: a deletion cannot go on yet (an ExpenseApp with Tenants left, a Tenant
	// whose database cannot be reached); the message says what it waits for.
	ReasonDeletionBlocked = "DeletionBlocked"
	// ReasonMigrationQueued: the tenant's schema waits for a migration that is not its own step's to run
	// (the ExpenseApp's rollout), before it is Ready or before a move.
	ReasonMigrationQueued = "MigrationQueued"
	// ReasonRolloutHalted: the ExpenseApp's rollout stopped after failed migrations (the canary, or
	// too many of the fleet).
	ReasonRolloutHalted = "RolloutHalted"
	// ReasonNoImage: the ExpenseApp names no image and the operator was started without a default.
	ReasonNoImage = "NoImage"
	// ReasonInvalidDatabase: a database connection string does not parse, or lacks what the operator
	// needs.
	ReasonInvalidDatabase = "InvalidDatabaseURL"
	// ReasonShardNotFound: a Tenant names (spec.shard) a shard its ExpenseApp does not have.
	ReasonShardNotFound = "ShardNotFound"
	// ReasonShardInUse: a shard was removed from the ExpenseApp's spec.shards while tenants remain on it.
	ReasonShardInUse = "ShardInUse"
	// ReasonShardUnreachable: the operator cannot reach one of the ExpenseApp's shards.
	ReasonShardUnreachable = "ShardUnreachable"
	// ReasonMoveBlocked: a server lacks what a move between shards needs (wal_level, a superuser login).
	ReasonMoveBlocked = "MoveBlocked"
	// ReasonMoveFailed: a move between shards failed and was undone; the tenant stays where it was.
	ReasonMoveFailed = "MoveFailed"
	// ReasonNoObjectStore: a Backup's tenant belongs to an ExpenseApp without spec.backup.objectStore.
	ReasonNoObjectStore = "NoObjectStore"
	// ReasonObjectStoreError: the object store could not be reached, or refused a request (the
	// credentials, the bucket); the operator tries again.
	ReasonObjectStoreError = "ObjectStoreError"
	// ReasonBackupFailed: a backup could not be taken (the tenant not Ready, its schema unreadable); the
	// Backup is Failed, and a new Backup is needed.
	ReasonBackupFailed = "BackupFailed"
	// ReasonInvalidSchedule: a ScheduledBackup's spec.schedule is not a cron expression of six fields.
	ReasonInvalidSchedule = "InvalidSchedule"
	// ReasonSourceNotFound: a Tenant's spec.source names a Backup or a Tenant that does not exist in its
	// namespace, or a Backup whose files are not in the object store.
	ReasonSourceNotFound = "SourceNotFound"
	// ReasonSourceNotReady: a Tenant's spec.source names a Backup that is not Completed, or a Tenant that
	// is not Ready.
	ReasonSourceNotReady = "SourceNotReady"
	// ReasonSourceFailed: filling a new tenant from its spec.source failed (a backup's checksum or row
	// count that does not match, a backup from a newer release, a table a clone may not copy); nothing
	// of it was kept.
	ReasonSourceFailed = "SourceFailed"
)

// ExpenseAppFinalizer keeps an ExpenseApp until no Tenant uses it: its Tenants need its database to be
// cleaned up.
const ExpenseAppFinalizer = "tenantry.dev/expenseapp"

// TenantFinalizer guards a Tenant's database objects: the registry row always, the schema and role
// when the deletion policy is Delete.
const TenantFinalizer = "tenantry.dev/tenant"

// AdminSecretSuffix names the Secret holding a tenant's first admin login: "<tenant>-admin".
const AdminSecretSuffix = "-admin"
