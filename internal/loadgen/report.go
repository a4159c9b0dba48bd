package loadgen

import (
	"fmt"
	"io"
	"maps"
	"slices"

	"time"
)

// Report is the result of one run.
type Report struct {
	Config  Config
	Started time.Time
	// Ramp is the time from the first request until every device had made
	// its first poll. Window is the length of the measured window.
	Ramp   time.Duration
	Window time.Duration
	// Settled is true when the window opened only after the edge had
	// stored every device's first poll, which the run can tell only with a
	// NATS URL.
	Settled bool

	// Latencies and Counts cover the window (recorder says which steps
	// count), and Errors the whole run.
	Latencies []Latency
	Counts    map[string]int
	Errors    map[string]int
	// Undelivered counts approvals posted in the window whose token had not
	// reached its device when the run stopped waiting for it.
	Undelivered int

	// Edge is nil when no edge PID was given, and Storage when no NATS URL
	// was given. Self is the load process.
	Edge    *ProcWindow
	Self    *ProcWindow
	Storage *StorageOps
	// Metrics is nil when no edge metrics URL was given.
	Metrics *MetricsCheck

	// Figures are the headline numbers derived from the rest, for printing
	// and for comparing runs.
	Figures []Figure
}

// Figure is one derived number.
type Figure struct {
	Name  string
	Value float64
	Unit  string
}

// codesBucket is the bucket whose operations count per waiting device.
const codesBucket = "device_codes"

// derive fills Figures.
func (rep *Report) derive() {
	seconds := rep.Window.Seconds()
	minutes := rep.Window.Minutes()
	devices := float64(rep.Config.Devices)
	add := func(name string, value float64, unit string) {
		rep.Figures = append(rep.Figures, Figure{Name: name, Value: value, Unit: unit})
	}

	for _, l := range rep.Latencies {
		add(l.Step+" p50", ms(l.P50), "ms")
		add(l.Step+" p99", ms(l.P99), "ms")
	}
	for _, name := range []string{CountAuthorizations, CountPolls, CountTokens, CountApprovals} {
		if n, ok := rep.Counts[name]; ok && seconds > 0 {
			add(name+" per second", float64(n)/seconds, "/s")
		}
	}

	if e := rep.Edge; e != nil && e.Errors == 0 {
		cpu := (e.End.CPU - e.Start.CPU).Seconds()
		add("edge CPU in window", cpu, "s")
		add("edge CPU share of one core", cpu/seconds*100, "%")
		if polls := rep.Counts[CountPolls]; polls > 0 {
			add("edge CPU per 1,000 polls", cpu/float64(polls)*1000*1000, "ms")
		}
		if auths := rep.Counts[CountAuthorizations]; auths > 0 && rep.Config.Mode == ModeAuthorize {
			add("edge CPU per 1,000 device authorizations", cpu/float64(auths)*1000*1000, "ms")
		}
		if rep.Config.Mode != ModeAuthorize && minutes > 0 {
			add("edge CPU per waiting device per minute", cpu/devices/minutes*1000, "ms")
		}
		add("edge RSS before the ramp", mib(e.Before.RSS), "MiB")
		add("edge RSS at window start", mib(e.Start.RSS), "MiB")
		add("edge RSS peak", mib(e.PeakRSS), "MiB")
		if rep.Config.Mode != ModeAuthorize {
			add("edge RSS growth per waiting device", float64(e.Start.RSS-e.Before.RSS)/devices/1024, "KiB")
		}
	}
	if s := rep.Self; s != nil && seconds > 0 {
		add("load process CPU share of one core", (s.End.CPU-s.Start.CPU).Seconds()/seconds*100, "%")
	}
	if st := rep.Storage; st != nil && minutes > 0 && rep.Config.Mode != ModeAuthorize {
		add("device_codes reads per waiting device per minute", float64(st.Reads[codesBucket])/devices/minutes, "")
		add("device_codes writes per waiting device per minute", float64(st.Writes[codesBucket])/devices/minutes, "")
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func mib(b int64) float64        { return float64(b) / (1 << 20) }

// Print writes the report for a reader.
func (rep *Report) Print(w io.Writer) {
	c := rep.Config
	fmt.Fprintf(w, "target %s, mode %s, %d devices, code rate %s, wait %ds, approvals %s from %d phones, %d extra source addresses\n",
		c.BaseURL, c.Mode, c.Devices, rate(c.CodeRate), c.Wait, rate(c.ApprovalRate), c.Phones, c.Sources)
	fmt.Fprintf(w, "ramp %s, window %s, first polls all stored before the window: %t\n\n",
		rep.Ramp.Round(time.Millisecond), rep.Window.Round(time.Millisecond), rep.Settled)

	fmt.Fprintf(w, "%-36s %8s %9s %9s %9s %9s\n", "latency (ms), completed in window", "count", "p50", "p90", "p99", "max")
	for _, l := range rep.Latencies {
		fmt.Fprintf(w, "%-36s %8d %9.2f %9.2f %9.2f %9.2f\n", l.Step, l.Count, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max))
	}

	fmt.Fprintf(w, "\n%-50s %9s %9s\n", "outcomes in window", "count", "per s")
	for _, name := range slices.Sorted(maps.Keys(rep.Counts)) {
		fmt.Fprintf(w, "%-50s %9d %9.1f\n", name, rep.Counts[name], float64(rep.Counts[name])/rep.Window.Seconds())
	}
	if rep.Undelivered > 0 {
		fmt.Fprintf(w, "%-50s %9d\n", "approvals whose token never arrived", rep.Undelivered)
	}

	fmt.Fprintf(w, "\nerrors over the whole run:")
	if len(rep.Errors) == 0 {
		fmt.Fprintf(w, " none\n")
	} else {
		fmt.Fprintln(w)
		for _, kind := range slices.Sorted(maps.Keys(rep.Errors)) {
			fmt.Fprintf(w, "  %-80s %9d\n", kind, rep.Errors[kind])
		}
	}

	if rep.Metrics != nil {
		fmt.Fprintln(w)
		rep.Metrics.print(w)
	}

	if st := rep.Storage; st != nil {
		fmt.Fprintf(w, "\nKV operations in window, by bucket:\n")
		buckets := maps.Clone(st.Reads)
		maps.Copy(buckets, st.Writes)
		for _, b := range slices.Sorted(maps.Keys(buckets)) {
			fmt.Fprintf(w, "  %-16s reads %9d  writes %9d\n", b, st.Reads[b], st.Writes[b])
		}
	}

	fmt.Fprintf(w, "\nfigures:\n")
	for _, f := range rep.Figures {
		fmt.Fprintf(w, "  %-52s %12.3f %s\n", f.Name, f.Value, f.Unit)
	}
}

func rate(r float64) string {
	if r <= 0 {
		return "uncapped"
	}
	return fmt.Sprintf("%g/s", r)
}

// PrintComparison writes the figures of several reports side by side, then
// the ratio of each later report's figure to the first report's.
func PrintComparison(w io.Writer, names []string, reports []*Report) {
	if len(reports) == 0 {
		return
	}
	fmt.Fprintf(w, "%-52s", "figure")
	for _, name := range names {
		fmt.Fprintf(w, " %14s", shorten(name, 14))
	}
	for i := range names[1:] {
		fmt.Fprintf(w, " %14s", fmt.Sprintf("ratio %d/1", i+2))
	}
	fmt.Fprintln(w)

	for _, f := range reports[0].Figures {
		values := []float64{f.Value}
		for _, rep := range reports[1:] {
			v, ok := figure(rep, f.Name)
			if !ok {
				values = nil
				break
			}
			values = append(values, v)
		}
		if values == nil {
			continue
		}
		label := f.Name
		if f.Unit != "" {
			label += " (" + f.Unit + ")"
		}
		fmt.Fprintf(w, "%-52s", shorten(label, 52))
		for _, v := range values {
			fmt.Fprintf(w, " %14.3f", v)
		}
		for _, v := range values[1:] {
			if values[0] == 0 {
				fmt.Fprintf(w, " %14s", "n/a")
				continue
			}
			fmt.Fprintf(w, " %14.2f", v/values[0])
		}
		fmt.Fprintln(w)
	}
}

func figure(rep *Report, name string) (float64, bool) {
	for _, f := range rep.Figures {
		if f.Name == name {
			return f.Value, true
		}
	}
	return 0, false
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
