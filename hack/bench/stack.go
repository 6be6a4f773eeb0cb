package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/internal/controller"
	"tenantry.dev/tenantry/test/utils/manifests"
	"tenantry.dev/tenantry/test/utils/pgcluster"
)

// stack is an API server, a PostgreSQL cluster and the operator as a child process.
type stack struct {
	env         *envtest.Environment
	pg          *pgcluster.Throwaway
	k8s         client.WithWatch
	cfg         *rest.Config
	dir         string
	operator    *exec.Cmd
	args        []string // the operator's command line
	metricsAddr string
	pprofAddr   string
	dbURLs      map[string]string // the database of each namespace's ExpenseApp
	logLines    int               // the operator's log lines already shown
}

// platformNamespace is the benchmark operator's own namespace: it holds the ClusterDatabases' Secrets.
const platformNamespace = "tenantry-system"

func startStack(concurrency int, extraArgs ...string) (*stack, error) {
	s := &stack{}
	var err error
	if s.dir, err = os.MkdirTemp("", "tenantry-bench-"); err != nil {
		return nil, err
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		return nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set: run `make bench`")
	}
	s.env = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := s.env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting envtest: %w", err)
	}
	cfg.QPS, cfg.Burst = -1, 0
	s.cfg = cfg
	kubeconfig := filepath.Join(s.dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, s.env.KubeConfig, 0o600); err != nil {
		return nil, err
	}
	if s.k8s, err = client.NewWithWatch(cfg, client.Options{Scheme: controller.NewScheme()}); err != nil {
		return nil, err
	}
	if s.pg, err = pgcluster.StartThrowaway(); err != nil {
		return nil, fmt.Errorf("starting PostgreSQL: %w", err)
	}
	// The platform's namespace, which holds the ClusterDatabases' Secrets.
	if err := s.k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: platformNamespace}}); err != nil {
		return nil, err
	}

	bin := filepath.Join(s.dir, "manager")
	build := exec.Command("go", "build", "-o", bin, "./cmd/manager")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("building the operator: %w", err)
	}
	port, err := pgcluster.FreePort()
	if err != nil {
		return nil, err
	}
	s.metricsAddr = fmt.Sprintf("127.0.0.1:%d", port)
	if port, err = pgcluster.FreePort(); err != nil {
		return nil, err
	}
	s.pprofAddr = fmt.Sprintf("127.0.0.1:%d", port)
	s.args = append([]string{bin, "--kubeconfig=" + kubeconfig, "--metrics-bind-address=" + s.metricsAddr, "--metrics-secure=false",
		"--health-probe-bind-address=0", "--pprof-bind-address=" + s.pprofAddr, "--zap-time-encoding=rfc3339nano", "--max-concurrent-reconciles=" + strconv.Itoa(concurrency),
		"--platform-namespace=" + platformNamespace}, extraArgs...)
	err = s.startOperator()
	return s, err
}

func (s *stack) startOperator() error {
	logFile, err := os.OpenFile(filepath.Join(s.dir, "operator.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	s.operator = exec.Command(s.args[0], s.args[1:]...)
	s.operator.Stdout, s.operator.Stderr = logFile, logFile
	if err := s.operator.Start(); err != nil {
		return fmt.Errorf("starting the operator: %w", err)
	}
	return nil
}

func (s *stack) stopOperator() {
	if s.operator == nil || s.operator.Process == nil {
		return
	}
	_ = s.operator.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = s.operator.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.operator.Process.Kill()
	}
}

func (s *stack) stop() {
	s.stopOperator()
	if s.pg != nil {
		s.pg.Close()
	}
	if s.env != nil {
		_ = s.env.Stop()
	}
	if os.Getenv("BENCH_KEEP") == "" {
		_ = os.RemoveAll(s.dir)
	} else {
		fmt.Fprintln(os.Stderr, "bench: kept", s.dir)
	}
}

// newApp creates a namespace with an ExpenseApp on a fresh database and returns that database's URL.
func (s *stack) newApp(ctx context.Context, ns string) (string, error) {
	url, err := s.pg.NewDatabase(ctx, strings.ReplaceAll(ns, "-", "_"))
	if err != nil {
		return "", err
	}
	return url, s.newAppOn(ctx, ns, url)
}

// newAppOn creates a namespace with an ExpenseApp on the database of a superuser connection string.
func (s *stack) newAppOn(ctx context.Context, ns, url string) error {
	if err := s.k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return err
	}
	if s.dbURLs == nil {
		s.dbURLs = map[string]string{}
	}
	s.dbURLs[ns] = url
	if err := manifests.DeclareDatabase(ctx, s.k8s, platformNamespace, ns, url, ns); err != nil {
		return err
	}
	return s.k8s.Create(ctx, &tenantryv1.ExpenseApp{
		ObjectMeta: metav1.ObjectMeta{Name: "expenses", Namespace: ns},
		Spec: tenantryv1.ExpenseAppSpec{
			Database:   tenantryv1.DatabaseSpec{ClusterDatabase: ns},
			Migrations: tenantryv1.MigrationsSpec{MaxConcurrent: 16},
		},
	})
}

// usage is the operator's CPU time so far and its peak resident memory.
func (s *stack) usage() (cpu time.Duration, peakRSS int64, err error) {
	return procUsage(s.operator.Process.Pid)
}

// procStat reads /proc/<pid>/stat: the command name, and the fields after it (utime is fields[11]).
func procStat(pid string) (cmd string, fields []string, err error) {
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return "", nil, err
	}
	// The command name (which may hold spaces and parentheses) is between the first "(" and the last ")".
	open, closing := strings.IndexByte(string(stat), '('), strings.LastIndexByte(string(stat), ')')
	if open < 0 || closing < open {
		return "", nil, fmt.Errorf("/proc/%s/stat: %q", pid, stat)
	}
	return string(stat[open+1 : closing]), strings.Fields(string(stat[closing+2:])), nil
}

// cpuTicks is the CPU time in fields (of procStat, or of /proc/stat's cpu line) summed.
func cpuTicks(fields []string) time.Duration {
	var ticks int64
	for _, f := range fields {
		v, _ := strconv.ParseInt(f, 10, 64)
		ticks += v
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ is 100 on Linux
}

// procUsage is a process's CPU time so far and its peak resident memory.
func procUsage(pid int) (cpu time.Duration, peakRSS int64, err error) {
	_, fields, err := procStat(strconv.Itoa(pid))
	if err != nil {
		return 0, 0, err
	}
	cpu = cpuTicks(fields[11:13]) // utime, stime
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			peakRSS = kb * 1024
		}
	}
	return cpu, peakRSS, nil
}
