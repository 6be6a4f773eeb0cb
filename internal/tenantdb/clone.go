package tenantdb

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
)

// CloneTables chooses the tables of a snapshot a clone copies: those asked for (all when none are), but
// never the people tables (migrations.PeopleTables) nor a table whose rows refer to one, directly or
// through another table. A table asked for that cannot be copied, or does not exist, is an error that
// says why.
func CloneTables(all []CopyTable, people, asked []string) ([]CopyTable, error) {
	byName := map[string]CopyTable{}
	for _, t := range all {
		byName[t.Name] = t
	}
	// why says why a table cannot be copied, "" if it can.
	why := map[string]string{}
	var reason func(name string, seen map[string]bool) string
	reason = func(name string, seen map[string]bool) string {
		if r, ok := why[name]; ok {
			return r
		}
		if slices.Contains(people, name) {
			return name + " holds people or their credentials, which a clone never copies"
		}
		if seen[name] {
			return ""
		}
		seen[name] = true
		for _, ref := range byName[name].References {
			if r := reason(ref, seen); r != "" {
				return fmt.Sprintf("%s refers to %s: %s", name, ref, r)
			}
		}
		return ""
	}
	for _, t := range all {
		why[t.Name] = reason(t.Name, map[string]bool{})
	}
	var out []CopyTable
	if len(asked) == 0 {
		for _, t := range all {
			if why[t.Name] == "" {
				out = append(out, t)
			}
		}
		return out, nil
	}
	var refused []string
	for _, name := range asked {
		t, ok := byName[name]
		switch {
		case !ok:
			refused = append(refused, fmt.Sprintf("the source has no table %q", name))
		case why[name] != "":
			refused = append(refused, why[name])
		default:
			out = append(out, t)
		}
	}
	if len(refused) > 0 {
		return nil, &CloneError{strings.Join(refused, "; ")}
	}
	// A table asked for whose references are not asked for would fail its foreign keys.
	for _, t := range out {
		for _, ref := range t.References {
			if !slices.ContainsFunc(out, func(o CopyTable) bool { return o.Name == ref }) {
				return nil, &CloneError{fmt.Sprintf("%s refers to %s, which is not in tables: add it", t.Name, ref)}
			}
		}
	}
	return out, nil
}

// CloneError says why a clone cannot copy what it was asked to.
type CloneError struct{ Msg string }

func (e *CloneError) Error() string { return e.Msg }

// Clone fills the schema of dst, a new tenant's (made, with nothing migrated yet), from one snapshot of
// src's: dst is migrated to the snapshot's version (MigrateTo, for occasion), the tables choose picks
// are streamed from the snapshot into dst's one loading transaction (Load), with the sequences their
// tables own. Each side runs on its own tenant's session, as its own tenant.
func Clone(ctx context.Context, src, dst *TenantSession, fsys fs.FS, occasion string,
	choose func([]CopyTable) ([]CopyTable, error)) (version int64, res LoadResult, err error) {
	// A place among the clones reading from the source's database, so that their snapshots never hold
	// every connection of its pool while each waits for another to fill its target.
	select {
	case src.clones <- struct{}{}:
		defer func() { <-src.clones }()
	case <-ctx.Done():
		return 0, LoadResult{}, ctx.Err()
	}
	err = src.Snapshot(ctx, func(sn *Snapshot) error {
		version = sn.Version
		tables, err := choose(sn.Tables)
		if err != nil {
			return err
		}
		if _, err := dst.MigrateTo(ctx, fsys, occasion, sn.Version); err != nil {
			return err
		}
		var seqs []Sequence
		for _, seq := range sn.Sequences {
			if slices.ContainsFunc(tables, func(t CopyTable) bool { return t.Name == seq.Table }) {
				seqs = append(seqs, seq)
			}
		}
		res, err = dst.Load(ctx, tables, seqs, func(ctx context.Context, t CopyTable, copyIn func(io.Reader) (int64, error)) error {
			pr, pw := io.Pipe()
			copied := make(chan int64, 1)
			go func() {
				n, err := sn.CopyOut(ctx, t, pw)
				pw.CloseWithError(err)
				copied <- n
			}()
			n, err := copyIn(pr)
			pr.CloseWithError(io.ErrClosedPipe) // a copy still writing stops
			out := <-copied
			switch {
			case err != nil:
				return err
			case n != out:
				return fmt.Errorf("copied %d rows of %d", n, out)
			}
			return nil
		})
		return err
	})
	return version, res, err
}
