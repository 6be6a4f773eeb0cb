package http

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"strconv"
	"time"

	"tenantry.dev/tenantry/app"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

func staticHandler() http.Handler {
	sub, _ := fs.Sub(staticFS, "static")
	h := http.StripPrefix("/static/", http.FileServer(http.FS(sub)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.ServeHTTP(w, r)
	})
}

// view is an HTML page to render: a template of templates/ inside the layout.
type view struct {
	Page   string
	Title  string
	Data   any
	Error  string
	Notice string
	User   *app.User
	Tenant *app.Tenant
	status int
}

func (v *view) write(w http.ResponseWriter, r *http.Request) {
	if v.Tenant == nil {
		if t, ok := r.Context().Value(tenantKey).(*app.Tenant); ok {
			v.Tenant = t
		} else {
			v.Tenant = &app.Tenant{DisplayName: "Tenantry"}
		}
	}
	var buf bytes.Buffer
	if err := pages[v.Page].ExecuteTemplate(&buf, "layout", v); err != nil {
		http.Error(w, "rendering "+v.Page+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' https: http: data:; style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("Referrer-Policy", "same-origin")
	if v.status == 0 {
		v.status = http.StatusOK
	}
	setRetryAfter(w, v.status)
	w.WriteHeader(v.status)
	_, _ = w.Write(buf.Bytes())
}

// Currency is the tenant's currency, for the templates.
func (v *view) Currency() string { return v.Tenant.Settings.CurrencyOrDefault() }

// Color is the tenant's brand colour, validated #rrggbb by the Tenant API.
func (v *view) Color() template.CSS {
	c := v.Tenant.Branding.PrimaryColor
	if len(c) != 7 || c[0] != '#' {
		return "#0b5fff"
	}
	for _, r := range c[1:] {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') && (r < 'A' || r > 'F') {
			return "#0b5fff"
		}
	}
	return template.CSS(c)
}

// renderError shows an error page with the status of its code.
func (s *Server) renderError(w http.ResponseWriter, r *http.Request, err error) {
	v := &view{Page: "error", Title: http.StatusText(statusOf(app.ErrorCode(err))), Error: app.ErrorMessage(err),
		status: statusOf(app.ErrorCode(err))}
	if t, ok := r.Context().Value(tenantKey).(*app.Tenant); ok {
		v.Tenant = t
	} else {
		v.Tenant = &app.Tenant{DisplayName: "Tenantry"}
	}
	v.write(w, r)
}

var funcs = template.FuncMap{
	"money": func(currency string, minor int64) string { return app.FormatMoney(minor, currency) },
	"amount": func(currency string, minor int64) string {
		if minor == 0 {
			return ""
		}
		return app.FormatAmount(minor, currency)
	},
	"date":     func(t time.Time) string { return t.Format("2006-01-02") },
	"month":    func(t time.Time) string { return t.Format("January 2006") },
	"monthKey": func(t time.Time) string { return t.Format("2006-01") },
	"i64":      func(n int64) string { return strconv.FormatInt(n, 10) },
	"left":     func(budget, spent, pending int64) int64 { return budget - spent - pending },
	"deref": func(p *int64) int64 {
		if p == nil {
			return 0
		}
		return *p
	},
}

// pages holds each page's template set: the layout plus the page.
var pages = func() map[string]*template.Template {
	m := map[string]*template.Template{}
	for _, p := range []string{"login", "error", "dashboard", "expenses", "expense_form", "budgets", "departments",
		"accounts", "users", "tokens"} {
		m[p] = template.Must(template.New(p).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+p+".html"))
	}
	return m
}()
