// Package kubelet runs a Deployment's container as a process on this machine, as a kubelet would run
// it in a pod: its command, args and environment exactly as written (Secret references read from the
// API server), as a non-root user when the pod asks for one and this process may switch, and its
// probes against the ports the container declares. Envtest has no kubelet; this is how tests and
// make dev prove that the Deployment the operator writes is one that runs.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Container returns the Deployment's container of that name.
func Container(dep *appsv1.Deployment, name string) (*corev1.Container, error) {
	for i := range dep.Spec.Template.Spec.Containers {
		if c := &dep.Spec.Template.Spec.Containers[i]; c.Name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("no container %q in Deployment %s", name, dep.Name)
}

// Env returns the container's environment as a process gets it: values as written, Secret references
// read from the API server (a missing Secret or key is an error, as it keeps a pod from starting).
func Env(ctx context.Context, c client.Reader, namespace string, container *corev1.Container) ([]string, error) {
	var env []string
	for _, e := range container.Env {
		if e.ValueFrom == nil {
			env = append(env, e.Name+"="+e.Value)
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		if ref == nil {
			return nil, fmt.Errorf("env %s: only values and Secret references are supported", e.Name)
		}
		var s corev1.Secret
		if err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ref.Name}, &s); err != nil {
			return nil, fmt.Errorf("env %s: Secret %s: %w", e.Name, ref.Name, err)
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			return nil, fmt.Errorf("env %s: Secret %s has no key %q", e.Name, ref.Name, ref.Key)
		}
		env = append(env, e.Name+"="+string(v))
	}
	return env, nil
}

// Process is a container run as a process.
type Process struct {
	Cmd    *exec.Cmd
	Exited chan error // receives the process's end
}

// Options say how to run a container here.
type Options struct {
	// Binaries maps the image's paths (the container's command[0]) to executables on this machine.
	Binaries map[string]string
	// Args replaces the container's args (nil runs them as written).
	Args []string
	// Log receives the process's output (nil discards it).
	Log *os.File
}

// Start runs the container of the Deployment: its command mapped through opts.Binaries, its args and
// environment. A pod that must run as non-root runs as nobody when this process is root.
func Start(ctx context.Context, c client.Reader, dep *appsv1.Deployment, container *corev1.Container, opts Options) (*Process, error) {
	if len(container.Command) == 0 {
		return nil, errors.New("the container has no command: the image's entrypoint cannot be known here")
	}
	bin, ok := opts.Binaries[container.Command[0]]
	if !ok {
		return nil, fmt.Errorf("no local build of the image's %s", container.Command[0])
	}
	env, err := Env(ctx, c, dep.Namespace, container)
	if err != nil {
		return nil, err
	}
	args := opts.Args
	if args == nil {
		args = append(append([]string{}, container.Command[1:]...), container.Args...)
	}
	cmd := exec.Command(bin, args...)
	// PATH comes from here, as an image sets its own; without a log, the output is discarded.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=/"}, env...)
	if opts.Log != nil {
		cmd.Stdout, cmd.Stderr = opts.Log, opts.Log
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM} // never outlive the caller
	if nonRoot(dep, container) && os.Geteuid() == 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: nobody, Gid: nobody}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &Process{Cmd: cmd, Exited: make(chan error, 1)}
	go func() { p.Exited <- cmd.Wait() }()
	return p, nil
}

// nobody is the uid and gid a non-root container runs as here.
const nobody = 65534

// nonRoot says whether the pod or the container asks to run as non-root.
func nonRoot(dep *appsv1.Deployment, c *corev1.Container) bool {
	if c.SecurityContext != nil && c.SecurityContext.RunAsNonRoot != nil {
		return *c.SecurityContext.RunAsNonRoot
	}
	psc := dep.Spec.Template.Spec.SecurityContext
	return psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
}

// Stop ends the process as a kubelet does: SIGTERM, then SIGKILL after the grace period.
func (p *Process) Stop(grace time.Duration) error {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.Exited:
		return err
	case <-time.After(grace):
		_ = p.Cmd.Process.Kill()
		return <-p.Exited
	}
}

// Probe runs an HTTP probe of the container against host (the pod's address): the probe's path on the
// port it names, by number or by the name of one of the container's ports. Success is a status from
// 200 to 399, as the kubelet counts it.
func Probe(ctx context.Context, host string, container *corev1.Container, probe *corev1.Probe) error {
	if probe == nil || probe.HTTPGet == nil {
		return errors.New("no HTTP probe")
	}
	port, err := portOf(container, probe.HTTPGet.Port)
	if err != nil {
		return err
	}
	timeout := time.Duration(max(probe.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := fmt.Sprintf("http://%s:%d%s", host, port, probe.HTTPGet.Path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode >= 400 {
		return fmt.Errorf("GET %s: %s", url, res.Status)
	}
	return nil
}

// portOf resolves a probe's port against the container's ports.
func portOf(c *corev1.Container, p intstr.IntOrString) (int32, error) {
	if p.Type == intstr.Int {
		return p.IntVal, nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("the container has no port named %q", p.StrVal)
}
