package identity

import (
	"testing"
	"time"
)

func TestParseTTL(t *testing.T) {
	valid := []struct {
		in    string
		limit time.Duration
		want  time.Duration
	}{
		{"3600", 0, time.Hour},
		{"1", 0, time.Second},
		{"0003", 0, 3 * time.Second},
		{"90s", 0, 90 * time.Second},
		{"1h30m", 0, 90 * time.Minute},
		{"+5m", 0, 5 * time.Minute},
		{"2000ms", 0, 2 * time.Second},
		{"24h", 24 * time.Hour, 24 * time.Hour},
		{"86400", 24 * time.Hour, 24 * time.Hour},
		{"9223372036", 0, 9223372036 * time.Second},
		{"1h", -1, time.Hour}, // a negative limit is no limit
	}
	for _, tc := range valid {
		got, err := ParseTTL("x509_ttl", tc.in, tc.limit)
		if err != nil || got != tc.want {
			t.Errorf("ParseTTL(%q, %v) = %v, %v; want %v", tc.in, tc.limit, got, err, tc.want)
		}
	}

	invalid := []struct {
		in    string
		limit time.Duration
		want  []string
	}{
		{"", 0, []string{"required", `"3600"`}},
		{"0", 0, []string{"not positive"}},
		{"0s", 0, []string{"not positive"}},
		{"-5s", 0, []string{"not positive"}},
		{"-5", 0, []string{"neither"}},
		{"1.5s", 0, []string{"whole number of seconds"}},
		{"1500ms", 0, []string{"whole number of seconds"}},
		{"1ns", 0, []string{"whole number of seconds"}},
		{"abc", 0, []string{"neither a number of seconds nor a duration"}},
		{"5 s", 0, []string{"neither"}},
		{" 5s", 0, []string{"neither"}},
		{"1d", 0, []string{"neither"}},
		{"9223372037", 0, []string{"too long"}},
		{"99999999999999999999", 0, []string{"too long"}},
		{"25h", 24 * time.Hour, []string{"maximum 24h", "at most 24h"}},
		{"90000", 24 * time.Hour, []string{`"90000" (25h)`, "maximum 24h"}},
		{"3601", time.Hour, []string{"(1h0m1s)", "maximum 1h"}},
	}
	for _, tc := range invalid {
		got, err := ParseTTL("jwt_ttl", tc.in, tc.limit)
		if err == nil {
			t.Errorf("ParseTTL(%q, %v) = %v, want error", tc.in, tc.limit, got)
			continue
		}
		wantFieldError(t, err, "jwt_ttl", tc.want...)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		24 * time.Hour:                "24h",
		90 * time.Minute:              "1h30m",
		time.Hour + time.Second:       "1h0m1s",
		30 * time.Minute:              "30m",
		90 * time.Second:              "1m30s",
		0:                             "0s",
		1500 * time.Millisecond:       "1.5s",
		10*time.Hour + 10*time.Minute: "10h10m",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
