package http

import (
	"fmt"
	"html"
	"html/template"
	"strings"

	"tenantry.dev/tenantry/app"
)

// budgetChart draws, per department, its budget as a grey bar with spent (brand colour, red beyond the
// budget) and pending (amber) on top: plain SVG, readable without JavaScript.
func budgetChart(depts []app.DepartmentMonth, currency string) template.HTML {
	if len(depts) == 0 {
		return ""
	}
	const width, label, row, bar = 720, 160, 34, 18
	var scale int64 = 1
	for _, d := range depts {
		scale = max(scale, d.BudgetMinor, d.SpentMinor+d.PendingMinor)
	}
	px := func(v int64) float64 { return float64(v) * float64(width-label-10) / float64(scale) }
	var b strings.Builder
	h := len(depts)*row + 10
	fmt.Fprintf(&b, `<svg class="chart" id="budget-chart" role="img" viewBox="0 0 %d %d" aria-label="Budget against spending per department">`, width, h)
	for i, d := range depts {
		y := 5 + i*row
		spentClass := "spent"
		if d.SpentMinor > d.BudgetMinor {
			spentClass = "over"
		}
		fmt.Fprintf(&b, `<g><title>%s: %s spent, %s pending of %s</title>`, html.EscapeString(d.Name),
			app.FormatMoney(d.SpentMinor, currency), app.FormatMoney(d.PendingMinor, currency), app.FormatMoney(d.BudgetMinor, currency))
		fmt.Fprintf(&b, `<text x="0" y="%d">%s</text>`, y+bar-4, html.EscapeString(truncate(d.Name, 22)))
		fmt.Fprintf(&b, `<rect class="budget" x="%d" y="%d" width="%.1f" height="%d" rx="3"/>`, label, y, px(d.BudgetMinor), bar)
		fmt.Fprintf(&b, `<rect class="%s" x="%d" y="%d" width="%.1f" height="%d" rx="3"/>`, spentClass, label, y+4, px(d.SpentMinor), bar-8)
		fmt.Fprintf(&b, `<rect class="pending" x="%.1f" y="%d" width="%.1f" height="%d"/>`, float64(label)+px(d.SpentMinor), y+4, px(d.PendingMinor), bar-8)
		b.WriteString(`</g>`)
	}
	b.WriteString(`</svg><p class="legend"><span><i style="background:#e4e7ec"></i>budget</span><span><i style="background:var(--brand)"></i>spent</span><span><i style="background:#f79009"></i>pending</span><span><i style="background:#d92d20"></i>over budget</span></p>`)
	return template.HTML(b.String())
}

// trendChart draws approved spending of the last 12 months as columns.
func trendChart(months []app.MonthTotal, currency string) template.HTML {
	if len(months) == 0 {
		return ""
	}
	const width, height, top, bottom = 720, 220, 24, 30
	var scale int64 = 1
	for _, m := range months {
		scale = max(scale, m.SpentMinor)
	}
	step := float64(width) / float64(len(months))
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" id="trend-chart" role="img" viewBox="0 0 %d %d" aria-label="Approved spending per month, last 12 months">`, width, height)
	fmt.Fprintf(&b, `<line class="axis" x1="0" y1="%d" x2="%d" y2="%d"/>`, height-bottom, width, height-bottom)
	for i, m := range months {
		hgt := float64(m.SpentMinor) * float64(height-top-bottom) / float64(scale)
		x := float64(i)*step + step*0.15
		fmt.Fprintf(&b, `<g><title>%s: %s</title><rect class="spent" x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="2"/>`,
			m.Month.Format("January 2006"), app.FormatMoney(m.SpentMinor, currency), x, float64(height-bottom)-hgt, step*0.7, hgt)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, x+step*0.35, height-bottom+16, m.Month.Format("Jan"))
		if m.SpentMinor > 0 {
			fmt.Fprintf(&b, `<text class="value" x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x+step*0.35,
				float64(height-bottom)-hgt-4, compact(m.SpentMinor, currency))
		}
		b.WriteString(`</g>`)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// compact writes an amount in whole units of its currency, shortened: 1234567.89 EUR → "1.2M".
func compact(minor int64, currency string) string {
	units := float64(minor)
	for range app.MinorDigits(currency) {
		units /= 10
	}
	switch {
	case units >= 1e6:
		return fmt.Sprintf("%.1fM", units/1e6)
	case units >= 1e4:
		return fmt.Sprintf("%.0fk", units/1e3)
	case units >= 1e3:
		return fmt.Sprintf("%.1fk", units/1e3)
	default:
		return fmt.Sprintf("%.0f", units)
	}
}
