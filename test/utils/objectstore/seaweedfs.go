// Package objectstore starts a throwaway S3-compatible object store for tests and benchmarks: a
// SeaweedFS server (master, volume, filer and S3 gateway in one process) on free ports of 127.0.0.1,
// with data in a temporary directory. The binary is hack/seaweedfs.sh's, named by $WEED.
package objectstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Server is a running SeaweedFS with its S3 gateway.
type Server struct {
	// Endpoint is the S3 gateway's address, http://127.0.0.1:port.
	Endpoint string
	// AccessKeyID and SecretAccessKey are the gateway's one identity, allowed everything.
	AccessKeyID, SecretAccessKey string

	bin, dir string
	ports    []int
	cmd      *exec.Cmd
	exited   chan struct{}
}

// Binary is the weed binary $WEED names.
func Binary() (string, error) {
	bin := os.Getenv("WEED")
	if bin == "" {
		return "", errors.New("WEED is not set: run hack/seaweedfs.sh, which builds SeaweedFS and prints its path (make test does)")
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("WEED=%s: %w", bin, err)
	}
	return bin, nil
}

// Start starts a SeaweedFS server and waits until its S3 gateway answers.
func Start() (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tenantry-seaweedfs-")
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: dir, AccessKeyID: "tenantry-" + randomHex(4), SecretAccessKey: randomHex(20)}
	// Each of master, volume, filer and S3 has an HTTP and a gRPC port.
	if s.ports, err = freePorts(8); err != nil {
		return nil, err
	}
	s.Endpoint = "http://127.0.0.1:" + strconv.Itoa(s.ports[6])
	if err := s.start(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	p := func(i int) string { return strconv.Itoa(s.ports[i]) }
	logFile, err := os.OpenFile(filepath.Join(s.dir, "weed.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = logFile.Close() }()
	data := filepath.Join(s.dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	cmd := exec.Command(s.bin, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir="+data,
		"-master.port="+p(0), "-master.port.grpc="+p(1), "-volume.port="+p(2), "-volume.port.grpc="+p(3),
		"-filer", "-filer.port="+p(4), "-filer.port.grpc="+p(5), "-s3", "-s3.port="+p(6), "-s3.port.grpc="+p(7),
		"-master.volumeSizeLimitMB=64", "-volume.max=0", "-volume.minFreeSpace=1")
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+s.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+s.SecretAccessKey)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", s.bin, err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { _ = cmd.Wait(); close(exited) }(s.exited)
	return s.waitReady(90 * time.Second)
}

// waitReady waits until the gateway lists buckets with the server's credentials.
func (s *Server) waitReady(timeout time.Duration) error {
	client, err := s.Client()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := client.ListBuckets(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("seaweedfs exited; its log:\n%s", s.Log())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("seaweedfs's S3 gateway did not answer in %s (%v); its log:\n%s", timeout, err, s.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Client is a client of the gateway, with the server's credentials.
func (s *Server) Client() (*minio.Client, error) {
	return minio.New(s.Endpoint[len("http://"):], &minio.Options{
		Creds: credentials.NewStaticV4(s.AccessKeyID, s.SecretAccessKey, ""), BucketLookup: minio.BucketLookupPath,
	})
}

// MakeBucket creates a bucket.
func (s *Server) MakeBucket(ctx context.Context, name string) error {
	client, err := s.Client()
	if err != nil {
		return err
	}
	if err := client.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		return fmt.Errorf("creating bucket %s: %w", name, err)
	}
	return nil
}

// Keys lists the keys of a bucket under prefix.
func (s *Server) Keys(ctx context.Context, bucket, prefix string) ([]string, error) {
	client, err := s.Client()
	if err != nil {
		return nil, err
	}
	var keys []string
	for o := range client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, o.Err
		}
		keys = append(keys, o.Key)
	}
	return keys, nil
}

// Pause stops the server's processes (SIGSTOP): requests to it hang, as to a store that went away
// without closing its connections. Resume lets them go on.
func (s *Server) Pause() error { return syscall.Kill(-s.cmd.Process.Pid, syscall.SIGSTOP) }

// Resume takes back Pause.
func (s *Server) Resume() error { return syscall.Kill(-s.cmd.Process.Pid, syscall.SIGCONT) }

// Kill stops the server at once; Restart starts it again on the same data and ports.
func (s *Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
}

// Restart starts a server stopped by Kill again.
func (s *Server) Restart() error { return s.start() }

// Log is what the server has logged.
func (s *Server) Log() string {
	log, _ := os.ReadFile(filepath.Join(s.dir, "weed.log"))
	if len(log) > 8000 {
		log = log[len(log)-8000:]
	}
	return string(log)
}

// Stop stops the server and removes its data.
func (s *Server) Stop() {
	s.Kill()
	_ = os.RemoveAll(s.dir)
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
