package web

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/edgenvr/nvr/appliance/authz"
)

// MetricsSource gives the appliance's own figures (recording, storage, cameras) for the metrics endpoint.
type MetricsSource interface {
	Metrics() []Metric
}

// Metric is one metric family in the Prometheus data model.
type Metric struct {
	// Name is the metric name ([a-zA-Z_:][a-zA-Z0-9_:]*); counters end in _total.
	Name string
	Help string
	// Type is "gauge" or "counter".
	Type    string
	Samples []Sample
}

// Sample is one value of a metric with its labels (name, value pairs).
type Sample struct {
	Labels []Label
	Value  float64
}

// Label is one label of a sample.
type Label struct{ Name, Value string }

var metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// metrics serves the Prometheus text exposition format (version 0.0.4) to holders of the status right:
// a person's session or a monitoring service account's API token. Each scrape is decided and audited.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request, c *caller, _ url.Values) {
	if _, ok := s.decide(w, r, c, authz.Request{Action: authz.ViewStatus}); !ok {
		return
	}
	var ms []Metric
	if s.cfg.Metrics != nil {
		ms = s.cfg.Metrics.Metrics()
	}
	ms = append(ms, s.ownMetrics()...)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	bw := bufio.NewWriter(w)
	if err := writeExposition(bw, ms); err != nil {
		s.log.Error("web: metrics", "err", err)
	}
	_ = bw.Flush()
}

// ownMetrics are the web server's figures: viewers, streams, exports and sign-ins.
func (s *Server) ownMetrics() []Metric {
	st := &s.stats
	results := []string{"ok", "failed", "throttled"}
	var logins []Sample
	for i, res := range results {
		logins = append(logins,
			Sample{Labels: []Label{{"step", "password"}, {"result", res}}, Value: float64(st.logins[i].Load())},
			Sample{Labels: []Label{{"step", "second_factor"}, {"result", res}}, Value: float64(st.secondFactor[i].Load())})
	}
	return []Metric{
		{Name: "nvr_login_attempts_total", Help: "Sign-in attempts by step and result.", Type: "counter", Samples: logins},
		{Name: "nvr_sessions", Help: "Signed-in sessions.", Type: "gauge", Samples: []Sample{{Value: float64(len(s.az.Sessions()))}}},
		{Name: "nvr_live_viewers", Help: "Live view streams being served.", Type: "gauge", Samples: []Sample{{Value: float64(st.liveViewers.Load())}}},
		{Name: "nvr_live_fragments_total", Help: "Fragments sent to live viewers.", Type: "counter", Samples: []Sample{{Value: float64(st.liveFragments.Load())}}},
		{Name: "nvr_playback_streams", Help: "Playback streams being served.", Type: "gauge", Samples: []Sample{{Value: float64(st.playbackStreams.Load())}}},
		{Name: "nvr_playback_fragments_total", Help: "Recorded fragments decrypted and sent to viewers.", Type: "counter", Samples: []Sample{{Value: float64(st.playFragments.Load())}}},
		{Name: "nvr_playback_bytes_total", Help: "Bytes of recorded fragments sent to viewers.", Type: "counter", Samples: []Sample{{Value: float64(st.playBytes.Load())}}},
		{Name: "nvr_exports_total", Help: "Evidence exports by result.", Type: "counter", Samples: []Sample{
			{Labels: []Label{{"result", "ok"}}, Value: float64(st.exports.Load())},
			{Labels: []Label{{"result", "failed"}}, Value: float64(st.exportFailures.Load())}}},
	}
}

// writeExposition writes metric families in the Prometheus text format, sorted by name; families with an
// invalid name or type, and samples with an invalid label name, are left out rather than corrupting the page.
func writeExposition(w *bufio.Writer, ms []Metric) error {
	ms = slices.Clone(ms)
	slices.SortStableFunc(ms, func(a, b Metric) int { return strings.Compare(a.Name, b.Name) })
	for _, m := range ms {
		if !metricName.MatchString(m.Name) || (m.Type != "gauge" && m.Type != "counter") {
			continue
		}
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", m.Name, escapeHelp(m.Help), m.Name, m.Type)
	samples:
		for _, smp := range m.Samples {
			for _, l := range smp.Labels {
				if !labelName.MatchString(l.Name) || strings.HasPrefix(l.Name, "__") {
					continue samples
				}
			}
			w.WriteString(m.Name)
			if len(smp.Labels) > 0 {
				w.WriteByte('{')
				for i, l := range smp.Labels {
					if i > 0 {
						w.WriteByte(',')
					}
					w.WriteString(l.Name)
					w.WriteString(`="`)
					w.WriteString(escapeLabel(l.Value))
					w.WriteByte('"')
				}
				w.WriteByte('}')
			}
			w.WriteByte(' ')
			w.WriteString(formatValue(smp.Value))
			w.WriteByte('\n')
		}
	}
	return w.Flush()
}

// countLogin counts a sign-in step's outcome: ok, failed or throttled.
func countLogin(c *[3]atomic.Uint64, err error) {
	var te *authz.ThrottledError
	switch {
	case err == nil:
		c[0].Add(1)
	case errors.As(err, &te):
		c[2].Add(1)
	default:
		c[1].Add(1)
	}
}

func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}

func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
