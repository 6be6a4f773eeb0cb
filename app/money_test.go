package app

import "testing"

func TestFormatAmount(t *testing.T) {
	tests := []struct {
		minor    int64
		currency string
		want     string
	}{
		{0, "EUR", "0.00"},
		{5, "EUR", "0.05"},
		{1234567, "EUR", "12,345.67"},
		{-1234567, "USD", "-12,345.67"},
		{1234567, "JPY", "1,234,567"},
		{1234567, "KWD", "1,234.567"},
		{100000000, "EUR", "1,000,000.00"},
	}
	for _, tt := range tests {
		if got := FormatAmount(tt.minor, tt.currency); got != tt.want {
			t.Errorf("FormatAmount(%d, %s) = %q, want %q", tt.minor, tt.currency, got, tt.want)
		}
	}
}

func TestParseAmount(t *testing.T) {
	tests := []struct {
		in       string
		currency string
		want     int64
		ok       bool
	}{
		{"12.34", "EUR", 1234, true},
		{"1,234.5", "EUR", 123450, true},
		{"12", "EUR", 1200, true},
		{".5", "EUR", 50, true},
		{"1500", "JPY", 1500, true},
		{"1.5", "JPY", 0, false},
		{"1.234", "KWD", 1234, true},
		{"12.345", "EUR", 0, false},
		{"-5", "EUR", 0, false},
		{"abc", "EUR", 0, false},
		{"", "EUR", 0, false},
		{"99999999999999999999", "EUR", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseAmount(tt.in, tt.currency)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseAmount(%q, %s) = %d, %v; want %d, ok=%v", tt.in, tt.currency, got, err, tt.want, tt.ok)
		}
	}
}
