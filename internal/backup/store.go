// Package backup writes a tenant's backup to an S3-compatible object store and reads it back: the
// format (a manifest and one compressed COPY stream per table), the store's client, and the two
// directions, each on the tenant's own session (tenantdb.TenantSession).
package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// PartSize is the size of each part of an upload: with the first part's, the memory one table's upload
// holds (twice this), whatever the tenant's size. With S3's 10,000 parts, one table's stream may reach
// 80 GiB compressed.
const PartSize = 8 << 20

// Credentials are an object store's access keys.
type Credentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
}

// CredentialsFrom reads an ObjectStore's credentials Secret's data.
func CredentialsFrom(data map[string][]byte) (Credentials, error) {
	c := Credentials{
		AccessKeyID:     string(data[tenantryv1.ObjectStoreAccessKeyID]),
		SecretAccessKey: string(data[tenantryv1.ObjectStoreSecretAccessKey]),
		SessionToken:    string(data[tenantryv1.ObjectStoreSessionToken]),
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return c, fmt.Errorf("the credentials Secret needs the keys %s and %s",
			tenantryv1.ObjectStoreAccessKeyID, tenantryv1.ObjectStoreSecretAccessKey)
	}
	return c, nil
}

// Store is one bucket, and a prefix in it, of an S3-compatible object store.
type Store struct {
	client *minio.Client
	secure bool // https
	bucket string
	prefix string // "" or ending in "/"
}

// NewStore returns the Store an ObjectStore names. It connects lazily.
func NewStore(spec tenantryv1.ObjectStore, creds Credentials) (*Store, error) {
	bucket, prefix, ok := strings.Cut(strings.TrimPrefix(spec.DestinationPath, "s3://"), "/")
	if !strings.HasPrefix(spec.DestinationPath, "s3://") || bucket == "" {
		return nil, fmt.Errorf("destinationPath %q is not s3://bucket[/prefix]", spec.DestinationPath)
	}
	if prefix = strings.Trim(prefix, "/"); ok && prefix != "" {
		prefix += "/"
	}
	endpoint, secure := "s3.amazonaws.com", true
	if spec.EndpointURL != "" {
		u, err := url.Parse(spec.EndpointURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("endpointURL %q is not http(s)://host[:port]", spec.EndpointURL)
		}
		endpoint, secure = u.Host, u.Scheme == "https"
	}
	lookup := minio.BucketLookupAuto
	if spec.ForcePathStyle {
		lookup = minio.BucketLookupPath
	}
	transport, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, err
	}
	// A store that accepts a connection and then says nothing holds no worker for long.
	transport.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	transport.ResponseHeaderTimeout = 30 * time.Second
	client, err := minio.New(endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken),
		Secure:       secure,
		Region:       spec.Region,
		BucketLookup: lookup,
		Transport:    transport,
	})
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", endpoint, err)
	}
	return &Store{client: client, secure: secure, bucket: bucket, prefix: prefix}, nil
}

// URL is where key is, as s3://bucket/prefix/key.
func (s *Store) URL(key string) string { return "s3://" + s.bucket + "/" + s.prefix + key }

// Put writes r to key as it reads it, a part at a time, and returns the bytes written. What fits in
// one part goes in one request.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, contentType string) (int64, error) {
	first := make([]byte, PartSize)
	n, err := io.ReadFull(r, first)
	size := int64(-1)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		size, r = int64(n), bytes.NewReader(first[:n])
	case err != nil:
		return 0, fmt.Errorf("writing %s: %w", s.URL(key), err)
	default:
		r = io.MultiReader(bytes.NewReader(first), r)
	}
	// Over https the payload is not signed (UNSIGNED-PAYLOAD): TLS carries it whole, and hashing every
	// part for the signature costs CPU. Over plain http the signature covers it.
	info, err := s.client.PutObject(ctx, s.bucket, s.prefix+key, r, size, minio.PutObjectOptions{
		PartSize: PartSize, ContentType: contentType, DisableContentSha256: s.secure,
	})
	if err != nil {
		return 0, fmt.Errorf("writing %s: %w", s.URL(key), err)
	}
	return info.Size, nil
}

// ErrNotFound says an object is not in the store.
var ErrNotFound = errors.New("not in the object store")

// IdleTimeout is how long a read from the store may wait for a byte before it fails.
const IdleTimeout = time.Minute

// Endpoint is the store's host[:port] as its ObjectStore names it ("" for AWS S3).
func Endpoint(spec tenantryv1.ObjectStore) string {
	if spec.EndpointURL == "" {
		return ""
	}
	u, err := url.Parse(spec.EndpointURL)
	if err != nil {
		return spec.EndpointURL
	}
	return u.Host
}

// Get opens key for reading. A read that waits more than IdleTimeout for a byte fails.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	idle := time.AfterFunc(IdleTimeout, cancel)
	obj, err := s.client.GetObject(ctx, s.bucket, s.prefix+key, minio.GetObjectOptions{})
	if err == nil {
		_, err = obj.Stat() // the request itself: a missing object or a refusal shows here
	}
	if err != nil {
		if obj != nil {
			_ = obj.Close()
		}
		idle.Stop()
		cancel()
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
			return nil, fmt.Errorf("%s: %w", s.URL(key), ErrNotFound)
		}
		return nil, fmt.Errorf("reading %s: %w", s.URL(key), err)
	}
	return &idleReader{obj: obj, idle: idle, cancel: cancel}, nil
}

// idleReader is an object being read, whose context ends when a read waits IdleTimeout for a byte.
type idleReader struct {
	obj    *minio.Object
	idle   *time.Timer
	cancel context.CancelFunc
}

func (r *idleReader) Read(p []byte) (int, error) {
	r.idle.Reset(IdleTimeout)
	return r.obj.Read(p)
}

func (r *idleReader) Close() error {
	r.idle.Stop()
	r.cancel()
	return r.obj.Close()
}

// RemoveAll removes every object under dir (a key prefix ending in "/"), and returns how many.
func (s *Store) RemoveAll(ctx context.Context, dir string) (int, error) {
	objects := s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + dir, Recursive: true})
	removed := 0
	counted := make(chan minio.ObjectInfo)
	var listErr error
	go func() {
		defer close(counted)
		for o := range objects {
			if o.Err != nil {
				listErr = o.Err
				continue
			}
			removed++
			counted <- o
		}
	}()
	for e := range s.client.RemoveObjects(ctx, s.bucket, counted, minio.RemoveObjectsOptions{}) {
		if e.Err != nil {
			for range counted { // let the lister finish
			}
			return 0, fmt.Errorf("removing %s: %w", s.URL(e.ObjectName), e.Err)
		}
	}
	if listErr != nil {
		return 0, fmt.Errorf("listing %s: %w", s.URL(dir), listErr)
	}
	return removed, nil
}
