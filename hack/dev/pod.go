package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"tenantry.dev/tenantry/internal/controller"
	"tenantry.dev/tenantry/test/utils/kubelet"
)

// localPod plays the kubelet for the app's Deployment, which envtest cannot run: it runs the
// Deployment's "app" container as a process on this machine (test/utils/kubelet), as the operator wrote it
// (command, args and env, with Secret references resolved; as nobody when make dev runs as root, since
// the pod must not run as root), except for what only a laptop needs: the binary is
// this checkout's build of cmd/app, the addresses are make dev's, and tenants are also served at
// <name>.localhost over plain HTTP. When the pod template changes (a new image, or the app's database
// Secret changed and the operator rolled the Deployment), the process is replaced, as a rollout would.
// It reports the process's readiness in the Deployment's status, so the ExpenseApp's conditions say
// what is true on this machine.
type localPod struct {
	k8s      client.Client
	key      types.NamespacedName // the Deployment
	binary   string               // the build of cmd/app
	httpAddr string
	logPath  string
	// confirmed says whether the app's database Secret is the one for this run (e.g. the server's port
	// is this run's): until it is, nothing starts, so the app never starts on stale connection details.
	confirmed func(*corev1.Secret) bool
	// started is told each time a process starts serving, with the template hash it runs.
	started chan<- string

	proc     *kubelet.Process
	exited   chan error // the process's end, once its log is closed
	running  string     // hash of the template the process runs
	ready    bool
	restarts int
}

const podSyncPeriod = 250 * time.Millisecond

// run keeps the process in line with the Deployment until ctx ends, then stops it.
func (p *localPod) run(ctx context.Context) {
	defer p.stop()
	for {
		if err := p.sync(ctx); err != nil && ctx.Err() == nil {
			p.logf("%v", err)
		}
		select {
		case <-ctx.Done():
			return
		case err := <-p.exited:
			p.logf("the app exited (%v); restarting it", err)
			p.proc, p.running = nil, ""
			p.restarts++
			if err := p.setStatus(ctx, false); err != nil {
				p.logf("recording the restart in the Deployment's status: %v", err)
			}
			select { // back off as a kubelet does for a crashing container, up to 10 s
			case <-ctx.Done():
				return
			case <-time.After(min(time.Duration(p.restarts)*time.Second, 10*time.Second)):
			}
		case <-time.After(podSyncPeriod):
		}
	}
}

// sync starts or replaces the process when the template changed, and reports its readiness.
func (p *localPod) sync(ctx context.Context) error {
	var dep appsv1.Deployment
	if err := p.k8s.Get(ctx, p.key, &dep); err != nil {
		return client.IgnoreNotFound(err)
	}
	tmpl, _ := json.Marshal(dep.Spec.Template)
	sum := sha256.Sum256(tmpl)
	hash := hex.EncodeToString(sum[:8])
	if hash != p.running {
		c, args, err := p.resolve(ctx, &dep)
		if err != nil {
			return err
		}
		p.stop()
		if err := p.start(ctx, &dep, c, args); err != nil {
			return err
		}
		p.running, p.ready = hash, false
		p.logf("started the app for pod template %s (pid %d)", hash, p.proc.Cmd.Process.Pid)
	}
	ready := p.probe(ctx)
	if ready != p.ready {
		p.ready = ready
		if ready && p.started != nil {
			select {
			case p.started <- p.running:
			default:
			}
		}
	}
	return p.setStatus(ctx, ready)
}

// resolve returns the container and its arguments with make dev's addresses. It fails while the app's
// Secret is missing, not confirmed for this run, or not the one the template was written for.
func (p *localPod) resolve(ctx context.Context, dep *appsv1.Deployment) (*corev1.Container, []string, error) {
	c, err := kubelet.Container(dep, "app")
	if err != nil {
		return nil, nil, err
	}
	var s corev1.Secret
	name := dep.Name + "-app-db"
	if err := p.k8s.Get(ctx, types.NamespacedName{Namespace: dep.Namespace, Name: name}, &s); err != nil {
		return nil, nil, fmt.Errorf("waiting for Secret %s: %w", name, err)
	}
	if dep.Spec.Template.Annotations[controller.AnnotationAppSecretHash] != controller.SecretHash(&s) || !p.confirmed(&s) {
		return nil, nil, fmt.Errorf("waiting for the operator to confirm Secret %s for this run", name)
	}
	var args []string
	for _, a := range c.Args {
		if !strings.HasPrefix(a, "--http-addr=") && !strings.HasPrefix(a, "--metrics-addr=") {
			args = append(args, a)
		}
	}
	// The metrics listener stays off: its fixed port would clash with whatever else runs here.
	args = append(args, "--http-addr="+p.httpAddr, "--metrics-addr=", "--dev-host-suffix=.localhost", "--insecure-cookies")
	return c, args, nil
}

// start runs the container as the pod would (kubelet.Start), with make dev's arguments.
func (p *localPod) start(ctx context.Context, dep *appsv1.Deployment, c *corev1.Container, args []string) error {
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	proc, err := kubelet.Start(ctx, p.k8s, dep, c, kubelet.Options{Binaries: map[string]string{"/app": p.binary}, Args: args, Log: logFile})
	if err != nil {
		_ = logFile.Close() // nothing was written to it
		return err
	}
	p.proc, p.exited = proc, make(chan error, 1)
	go func() { p.exited <- <-proc.Exited; _ = logFile.Close() }() // the process that wrote it has exited
	return nil
}

// stop ends the process as a kubelet does: SIGTERM, then SIGKILL after a grace period.
func (p *localPod) stop() {
	if p.proc == nil {
		return
	}
	_ = p.proc.Cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.proc.Cmd.Process.Kill()
		err = <-p.exited
	}
	p.logf("the app stopped (%v)", err)
	p.proc, p.running = nil, ""
}

// probe is the container's readiness probe.
func (p *localPod) probe(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.httpAddr+"/readyz", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	res.Body.Close()
	return res.StatusCode == http.StatusOK
}

// setStatus writes what a Deployment controller would from this one pod, and says who runs it.
func (p *localPod) setStatus(ctx context.Context, ready bool) error {
	var dep appsv1.Deployment
	if err := p.k8s.Get(ctx, p.key, &dep); err != nil {
		return client.IgnoreNotFound(err)
	}
	n := int32(0)
	if ready {
		n = 1
	}
	want := appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: 1, UpdatedReplicas: 1,
		ReadyReplicas: n, AvailableReplicas: n, UnavailableReplicas: 1 - n}
	runBy := "make dev on this machine (log: " + p.logPath + ")"
	if dep.Annotations[controller.AnnotationRunBy] != runBy {
		patch := client.MergeFrom(dep.DeepCopy())
		if dep.Annotations == nil {
			dep.Annotations = map[string]string{}
		}
		dep.Annotations[controller.AnnotationRunBy] = runBy
		if err := p.k8s.Patch(ctx, &dep, patch); err != nil {
			return fmt.Errorf("annotating Deployment %s: %w", p.key.Name, err)
		}
	}
	if got := dep.Status; got.ObservedGeneration == want.ObservedGeneration && got.Replicas == want.Replicas &&
		got.UpdatedReplicas == want.UpdatedReplicas && got.ReadyReplicas == want.ReadyReplicas &&
		got.AvailableReplicas == want.AvailableReplicas && got.UnavailableReplicas == want.UnavailableReplicas {
		return nil
	}
	patch := client.MergeFrom(dep.DeepCopy())
	dep.Status = want
	if err := p.k8s.Status().Patch(ctx, &dep, patch); err != nil {
		return fmt.Errorf("reporting the app's readiness in Deployment %s: %w", p.key.Name, err)
	}
	return nil
}

func (p *localPod) logf(format string, args ...any) {
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	line := fmt.Sprintf("make dev: %s %s\n", time.Now().Format(time.RFC3339), fmt.Sprintf(format, args...))
	if _, err := f.WriteString(line); err != nil {
		fmt.Fprint(os.Stderr, line)
	}
	if err := f.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "make dev: writing %s: %v\n", p.logPath, err)
	}
}
