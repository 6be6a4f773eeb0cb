package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/klauspost/compress/gzip"

	"tenantry.dev/tenantry/internal/tenantdb"
)

// Level is the gzip level of a backup's tables: the default, as pg_dump's custom format uses.
const Level = gzip.DefaultCompression

// Take backs up the tenant of session into dir of store: one snapshot of its schema (Snapshot), each
// table streamed through gzip into its object as COPY reads it, then the manifest, whose Tenant,
// Backup and Release are m's. Memory stays within a part of an upload per table (PartSize), whatever
// the tenant's size. progress, if not nil, is told of each table written.
func Take(ctx context.Context, session *tenantdb.TenantSession, store *Store, dir string, m Manifest,
	progress func(done, of int)) (Manifest, error) {
	m.Format, m.Compression, m.Tables, m.Sequences = FormatVersion, "gzip", nil, nil
	err := session.Snapshot(ctx, func(sn *tenantdb.Snapshot) error {
		m.StartedAt = time.Now().UTC()
		m.SchemaVersion = sn.Version
		for i, t := range sn.Tables {
			entry := Table{Name: t.Name, Columns: t.Columns, Object: fmt.Sprintf("tables/%04d.copy.gz", i)}
			if err := putTable(ctx, store, dir+entry.Object, &entry, func(w io.Writer) (int64, error) {
				return sn.CopyOut(ctx, t, w)
			}); err != nil {
				return err
			}
			m.Tables = append(m.Tables, entry)
			if progress != nil {
				progress(i+1, len(sn.Tables))
			}
		}
		for _, s := range sn.Sequences {
			m.Sequences = append(m.Sequences, Sequence{Name: s.Name, Value: s.Value, Table: s.Table})
		}
		return nil
	})
	if err != nil {
		return m, err
	}
	m.CompletedAt = time.Now().UTC()
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, err
	}
	if _, err := store.Put(ctx, dir+ManifestName, bytes.NewReader(data), "application/json"); err != nil {
		return m, err
	}
	return m, nil
}

// putTable streams what copyOut writes through gzip into key, and records its rows, sizes and checksum
// in entry.
func putTable(ctx context.Context, store *Store, key string, entry *Table, copyOut func(io.Writer) (int64, error)) error {
	pr, pw := io.Pipe()
	type result struct {
		rows, bytes int64
		sum         []byte
		err         error
	}
	done := make(chan result, 1)
	go func() {
		sum := sha256.New()
		counted := &countingWriter{w: sum}
		gz, err := gzip.NewWriterLevel(pw, Level)
		if err != nil {
			pw.CloseWithError(err)
			done <- result{err: err}
			return
		}
		rows, err := copyOut(io.MultiWriter(gz, counted))
		if err == nil {
			err = gz.Close()
		}
		pw.CloseWithError(err) // nil: the store sees the end of the stream
		done <- result{rows: rows, bytes: counted.n, sum: sum.Sum(nil), err: err}
	}()
	stored, putErr := store.Put(ctx, key, pr, "application/gzip")
	pr.CloseWithError(errors.New("the upload ended")) // a copy still writing stops
	r := <-done
	if r.err != nil {
		return fmt.Errorf("table %s: %w", entry.Name, r.err)
	}
	if putErr != nil {
		return fmt.Errorf("table %s: %w", entry.Name, putErr)
	}
	entry.Rows, entry.Bytes, entry.StoredBytes, entry.SHA256 = r.rows, r.bytes, stored, hex.EncodeToString(r.sum)
	return nil
}

// ReadManifest reads the manifest of the backup in dir.
func ReadManifest(ctx context.Context, store *Store, dir string) (Manifest, error) {
	obj, err := store.Get(ctx, dir+ManifestName)
	if err != nil {
		return Manifest{}, err
	}
	defer func() { _ = obj.Close() }()
	data, err := io.ReadAll(io.LimitReader(obj, 64<<20))
	if err != nil {
		return Manifest{}, fmt.Errorf("reading %s: %w", store.URL(dir+ManifestName), err)
	}
	m, err := parseManifest(data)
	if err != nil {
		return m, fmt.Errorf("%s: %w", store.URL(dir+ManifestName), err)
	}
	return m, nil
}

// ChecksumError says a table's data in the store is not what the manifest says was written.
type ChecksumError struct{ Msg string }

func (e *ChecksumError) Error() string { return e.Msg }

// Restore fills the tenant of session, whose schema its migrations made at m.SchemaVersion and which
// holds no rows, with the backup in dir (tenantdb.Load): every table's rows but those of skip, checked
// against the manifest's rows, size and checksum before the one transaction commits, and its
// sequences. A table's stream is cut off past the size the manifest gives it. Tables of the backup that
// the schema does not have are skipped (LoadResult.Skipped). progress, if not nil, is told of each
// table loaded.
func Restore(ctx context.Context, session *tenantdb.TenantSession, store *Store, dir string, m Manifest, skip []string,
	progress func(done, of int)) (tenantdb.LoadResult, error) {
	var tables []tenantdb.CopyTable
	byName := map[string]Table{}
	for _, t := range m.Tables {
		if !slices.Contains(skip, t.Name) {
			tables, byName[t.Name] = append(tables, t.CopyTable()), t
		}
	}
	seqs := make([]tenantdb.Sequence, len(m.Sequences))
	for i, s := range m.Sequences {
		seqs[i] = tenantdb.Sequence{Name: s.Name, Value: s.Value, Table: s.Table}
	}
	loaded := 0
	return session.Load(ctx, tables, seqs, func(ctx context.Context, t tenantdb.CopyTable, copyIn func(io.Reader) (int64, error)) error {
		entry := byName[t.Name]
		obj, err := store.Get(ctx, dir+entry.Object)
		if err != nil {
			return err
		}
		defer func() { _ = obj.Close() }()
		gz, err := gzip.NewReader(obj)
		if err != nil {
			return fmt.Errorf("%s: %w", store.URL(dir+entry.Object), err)
		}
		sum := sha256.New()
		counted := &countingWriter{w: sum}
		// Never more than the manifest says: a forged or damaged file stops at one byte past it.
		rows, err := copyIn(io.TeeReader(io.LimitReader(gz, entry.Bytes+1), counted))
		switch {
		case err != nil && counted.n > entry.Bytes:
			return &ChecksumError{fmt.Sprintf("%s holds more than the manifest's %d bytes", store.URL(dir+entry.Object), entry.Bytes)}
		case err != nil:
			return err
		case rows != entry.Rows || counted.n != entry.Bytes:
			return &ChecksumError{fmt.Sprintf("%s holds %d rows (%d bytes), the manifest says %d (%d bytes)",
				store.URL(dir+entry.Object), rows, counted.n, entry.Rows, entry.Bytes)}
		case hex.EncodeToString(sum.Sum(nil)) != entry.SHA256:
			return &ChecksumError{fmt.Sprintf("%s does not match the manifest's checksum", store.URL(dir+entry.Object))}
		}
		loaded++
		if progress != nil {
			progress(loaded, len(tables))
		}
		return nil
	})
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
