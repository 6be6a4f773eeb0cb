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
)

// Condition reasons.
const (
	ReasonSucceeded      = "Succeeded"
	ReasonProgressing    = "Progressing"
	ReasonAppNotFound    = "AppNotFound"
	ReasonSecretNotFound = "SecretNotFound"
	ReasonInvalidSecret  = "InvalidSecret"
	ReasonDatabaseError  = "DatabaseError"
	// ReasonAPIServerError: a request to the Kubernetes API server failed (a conflict, a timeout).
	ReasonAPIServerError  = "APIServerError"
	ReasonMigrationFailed = "MigrationFailed"
	ReasonHostConflict    = "HostConflict"
	ReasonSchemaConflict  = "SchemaConflict"
	ReasonIngressFailed   = "IngressFailed"
	// ReasonRouteFailed: writing or deleting the tenant's HTTPRoute (or a former route) failed.
	ReasonRouteFailed = "RouteFailed"
	// ReasonRouteNotAccepted: a Gateway refused the tenant's HTTPRoute; the message has its reason.
	ReasonRouteNotAccepted = "RouteNotAccepted"
	// ReasonGatewayAPIMissing: the app routes through the Gateway API, whose CRDs the cluster lacks.
	ReasonGatewayAPIMissing = "GatewayAPIMissing"
	ReasonAdminFailed       = "AdminFailed"
	ReasonDeletionBlocked   = "DeletionBlocked"
	ReasonMigrationQueued   = "MigrationQueued"
	ReasonRolloutHalted     = "RolloutHalted"
	ReasonNoImage           = "NoImage"
	ReasonInvalidDatabase   = "InvalidDatabaseURL"
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
)

// ExpenseAppFinalizer keeps an ExpenseApp until no Tenant uses it: its Tenants need its database to be
// cleaned up.
const ExpenseAppFinalizer = "tenantry.dev/expenseapp"

// TenantFinalizer guards a Tenant's database objects: the registry row always, the schema and role
// when the deletion policy is Delete.
const TenantFinalizer = "tenantry.dev/tenant"

// AdminSecretSuffix names the Secret holding a tenant's first admin login: "<tenant>-admin".
const AdminSecretSuffix = "-admin"
