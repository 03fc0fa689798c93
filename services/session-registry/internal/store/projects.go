package store

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/latchkey/latchkey/libs/bus"
	"github.com/latchkey/latchkey/libs/errs"
	registryv1 "github.com/latchkey/latchkey/libs/gen/latchkey/registry/v1"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// MaxDisplayName is the longest display name of a project or session, in bytes.
const MaxDisplayName = 200

func projectNotFound(id string) error {
	return errs.New(errs.ErrNotFound, "project %q not found", id)
}

// CheckDisplayName checks a display name's length.
func CheckDisplayName(name string) error {
	if len(name) > MaxDisplayName {
		return errs.New(errs.ErrInvalid, "display_name is %d bytes long, at most %d are allowed", len(name), MaxDisplayName)
	}
	return nil
}

// CreateProject creates a project; an existing id answers ErrExists.
func (s *Store) CreateProject(ctx context.Context, id, displayName string) (*latchkeyv1.Project, error) {
	if err := CheckID("project id", id); err != nil {
		return nil, err
	}
	if err := CheckDisplayName(displayName); err != nil {
		return nil, err
	}
	p := &latchkeyv1.Project{Id: id, DisplayName: displayName, CreateTime: timestamppb.New(s.opts.Now())}
	b, err := marshal(&registryv1.ProjectRecord{Project: p})
	if err != nil {
		return nil, err
	}
	if _, err := s.projects.Create(ctx, id, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil, errs.New(errs.ErrExists, "project %q already exists", id)
		}
		return nil, fmt.Errorf("creating project %s: %w", id, err)
	}
	return p, nil
}

// projectRecord reads a project's record, deleting or not.
func (s *Store) projectRecord(ctx context.Context, id string) (*registryv1.ProjectRecord, uint64, error) {
	if err := CheckID("project id", id); err != nil {
		return nil, 0, err
	}
	rec := &registryv1.ProjectRecord{}
	rev, err := getProto(ctx, s.projects, id, rec)
	if isNotFound(err) {
		return nil, 0, projectNotFound(id)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading project %s: %w", id, err)
	}
	return rec, rev, nil
}

// GetProject returns a project; a missing or deleting one answers ErrNotFound.
func (s *Store) GetProject(ctx context.Context, id string) (*latchkeyv1.Project, error) {
	rec, _, err := s.projectRecord(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec.GetDeleting() {
		return nil, projectNotFound(id)
	}
	return rec.GetProject(), nil
}

// ListProjects lists projects by id.
func (s *Store) ListProjects(ctx context.Context, page Page) ([]*latchkeyv1.Project, string, error) {
	size, err := page.size()
	if err != nil {
		return nil, "", err
	}
	after, err := page.after("projects")
	if err != nil {
		return nil, "", err
	}
	keys, err := s.listKeys(ctx, s.projects, ">")
	if err != nil {
		return nil, "", err
	}
	start, _ := slices.BinarySearch(keys, after)
	if start < len(keys) && keys[start] == after {
		start++
	}
	var out []*latchkeyv1.Project
	for i := start; i < len(keys); i++ {
		if len(out) == size {
			return out, nextToken("projects", out[len(out)-1].GetId()), nil
		}
		rec := &registryv1.ProjectRecord{}
		if _, err := getProto(ctx, s.projects, keys[i], rec); err != nil {
			if isNotFound(err) {
				continue // deleted since listed
			}
			return nil, "", fmt.Errorf("reading project %s: %w", keys[i], err)
		}
		if !rec.GetDeleting() {
			out = append(out, rec.GetProject())
		}
	}
	return out, "", nil
}

// SetProjectDeleting marks a project as being deleted (or, with false, no longer),
// so it answers NotFound while DeleteProject runs. It returns whether the project was
// already marked, so a repeated DeleteProject finishes the job.
func (s *Store) SetProjectDeleting(ctx context.Context, id string, deleting bool) (was bool, err error) {
	if err := CheckID("project id", id); err != nil {
		return false, err
	}
	_, _, err = bus.UpdateProto(ctx, s.projects, id, projectNotFound(id), func(rec *registryv1.ProjectRecord) error {
		if was = rec.GetDeleting(); was == deleting {
			return bus.ErrNoChange
		}
		rec.Deleting = deleting
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("marking project %s deleting: %w", id, err)
	}
	return was, nil
}

// PurgeProject deletes everything of a project: API keys first (so they stop working
// at once), then sessions, states, bundles and last the project record.
func (s *Store) PurgeProject(ctx context.Context, id string) error {
	if err := CheckID("project id", id); err != nil {
		return err
	}
	steps := []struct {
		kv     jetstream.KeyValue
		filter string
	}{
		{s.keys, "p." + id + ".*"},
		{s.sessions, id + ".*"},
		{s.states, id + ".>"},
		{s.bundles, id + ".>"}, // default site: <project>.<v>; others: <project>.<site>.<v>
	}
	if err := s.purgeKeyIndex(ctx, id); err != nil {
		return err
	}
	for _, st := range steps {
		keys, err := liveKeys(ctx, st.kv, st.filter)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := st.kv.Purge(ctx, k); err != nil {
				return fmt.Errorf("purging %s %s: %w", st.kv.Bucket(), k, err)
			}
		}
	}
	if err := s.purgeObjects(ctx, id+"."); err != nil {
		return err
	}
	if err := s.projects.Purge(ctx, id); err != nil {
		return fmt.Errorf("purging project %s: %w", id, err)
	}
	return nil
}
