package controller

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// The API server itself rejects invalid Tenants, with a message naming the field.
func TestTenantValidation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	negative := int64(-1)
	tests := []struct {
		name   string
		mutate func(*tenantryv1.Tenant)
		want   string // part of the API server's message
	}{
		{"upper-case host", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"Acme.example.com"} }, "spec.hosts[0]"},
		{"wildcard host", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"*.example.com"} }, "spec.hosts[0]"},
		{"host with scheme", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"https://acme.example.com"} }, "spec.hosts[0]"},
		{"host with port", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"acme.example.com:8080"} }, "spec.hosts[0]"},
		{"host with path", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"acme.example.com/app"} }, "spec.hosts[0]"},
		{"malformed host", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"acme..example.com"} }, "spec.hosts[0]"},
		{"host label ending in a dash", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"acme-.example.com"} }, "spec.hosts[0]"},
		{"duplicate hosts", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"a.example.com", "a.example.com"} }, "Duplicate value"},
		{"IPv4 address as host", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"a.example.com", "10.0.0.1"} }, "not an IP address"},
		{"numeric top-level label", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"acme.123"} }, "not an IP address"},
		{"empty host list", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{} }, "spec.hosts"},
		{"colour not #rrggbb", func(t *tenantryv1.Tenant) { t.Spec.Branding.PrimaryColor = "blue" }, "spec.branding.primaryColor"},
		{"short colour", func(t *tenantryv1.Tenant) { t.Spec.Branding.PrimaryColor = "#fff" }, "spec.branding.primaryColor"},
		{"logo over ftp", func(t *tenantryv1.Tenant) { t.Spec.Branding.LogoURL = "ftp://acme.com/logo.png" }, "logoURL must be an absolute http or https URL"},
		{"javascript logo", func(t *tenantryv1.Tenant) { t.Spec.Branding.LogoURL = "javascript:alert(1)" }, "logoURL must be an absolute http or https URL"},
		{"relative logo", func(t *tenantryv1.Tenant) { t.Spec.Branding.LogoURL = "/logo.png" }, "logoURL must be an absolute http or https URL"},
		{"lower-case currency", func(t *tenantryv1.Tenant) { t.Spec.Settings.Currency = "eur" }, "spec.settings.currency"},
		{"four-letter currency", func(t *tenantryv1.Tenant) { t.Spec.Settings.Currency = "EURO" }, "spec.settings.currency"},
		{"negative threshold", func(t *tenantryv1.Tenant) { t.Spec.Settings.ApprovalThreshold = &negative }, "spec.settings.approvalThreshold"},
		{"malformed admin email", func(t *tenantryv1.Tenant) { t.Spec.Admin.Email = "finance.acme.com" }, "spec.admin.email"},
		{"admin email with spaces", func(t *tenantryv1.Tenant) { t.Spec.Admin.Email = "fin ance@acme.com" }, "spec.admin.email"},
		{"unknown deletion policy", func(t *tenantryv1.Tenant) { t.Spec.DeletionPolicy = "Orphan" }, "spec.deletionPolicy"},
		{"no app", func(t *tenantryv1.Tenant) { t.Spec.AppRef.Name = "" }, "spec.appRef.name"},
		{"name too long", func(t *tenantryv1.Tenant) { t.Name = strings.Repeat("n", 241) }, "at most 240 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tn := f.tenant("invalid", "ok.example.com")
			tt.mutate(tn)
			err := k8s.Create(ctx, tn, client.DryRunAll)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("Create = %v, want Invalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}

	// A valid one passes, and its appRef cannot change afterwards.
	tn := f.tenant("valid", "valid.example.com")
	if err := k8s.Create(ctx, tn); err != nil {
		t.Fatalf("valid Tenant rejected: %v", err)
	}
	patch := client.MergeFrom(tn.DeepCopy())
	tn.Spec.AppRef.Name = "other"
	err := k8s.Patch(ctx, tn, patch)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "appRef is immutable") {
		t.Fatalf("changing appRef: %v, want Invalid with 'appRef is immutable'", err)
	}
}
