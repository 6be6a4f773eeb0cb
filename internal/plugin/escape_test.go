package plugin

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// A text report prints no control character it was given: a table named to clear the screen (an
// app's login can make one), a condition message or an annotation with escape sequences all print as
// text.
func TestEscapeAll(t *testing.T) {
	clear := "\x1b[2J\x1b[1;1Hall clear"
	tn := &tenantryv1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "acme", Annotations: map[string]string{"note": clear}},
		Spec:   tenantryv1.TenantSpec{DisplayName: clear},
		Status: tenantryv1.TenantStatus{Drift: &tenantryv1.TenantDrift{Details: []string{"extra table " + clear}}}}
	report := tenantReport{Tenant: tn, Conditions: []condition{{Type: "Ready", Message: clear}},
		Events: []event{{Reason: "Moved", Message: "\x1b]52;c;ZXZpbA==\x07 \u009b2J"}}}
	escapeAll(&report)
	for _, s := range []string{tn.Annotations["note"], tn.Spec.DisplayName, tn.Status.Drift.Details[0], report.Conditions[0].Message,
		report.Events[0].Message} {
		if strings.ContainsAny(s, "\x1b\x07\u009b") {
			t.Errorf("%q kept a control character", s)
		}
	}
	if report.Conditions[0].Message != `\u001b[2J\u001b[1;1Hall clear` {
		t.Errorf("escaped as %q", report.Conditions[0].Message)
	}
	if tn.Name != "acme" || report.Events[0].Reason != "Moved" {
		t.Errorf("plain strings changed: %q, %q", tn.Name, report.Events[0].Reason)
	}
}
