package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/meshsds/meshsds/cluster"
	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/secretsource"
)

// The objects the replicas share in the control plane's namespace.
const (
	// ReplicaLeasePrefix starts the name of each replica's Lease, which
	// carries its progress in the annotation ProgressAnnotation.
	ReplicaLeasePrefix = "meshsds-replica-"
	ProgressAnnotation = "meshsds.io/ca-progress"
	// RoleLabel marks the replicas' Leases (value "replica").
	RoleLabel = "meshsds.io/role"
	// ChangesConfigMap holds each mesh's CA change, one key per mesh.
	ChangesConfigMap = "meshsds-ca-changes"
	// LeaderLease is the Lease of the leader election.
	LeaderLease = "meshsds-leader"
)

// setChangeAttempts bounds SetChange's retries when another mesh's change
// was written to the ConfigMap at the same time.
const setChangeAttempts = 5

// Cluster is the cluster.Backend of replicas sharing a Kubernetes API
// server: a Lease per replica (renewed, with its progress as an annotation)
// and a ConfigMap of the meshes' CA changes, watched by informers so that
// every replica learns of a change at once. Start it before use.
type Cluster struct {
	client    kubernetes.Interface
	namespace string
	log       *slog.Logger
	now       func() time.Time
	wake      chan struct{}
}

var _ cluster.Backend = (*Cluster)(nil)

// NewCluster returns the backend in namespace.
func NewCluster(client kubernetes.Interface, namespace string, log *slog.Logger) *Cluster {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Cluster{client: client, namespace: namespace, log: log, now: time.Now, wake: make(chan struct{}, 1)}
}

// Start watches the replicas' Leases and the changes' ConfigMap until ctx
// ends, signalling Wake when another replica's progress or a change moves.
func (c *Cluster) Start(ctx context.Context) {
	replicas := informers.NewSharedInformerFactoryWithOptions(c.client, 0, informers.WithNamespace(c.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = labels.Set{RoleLabel: "replica"}.String()
		}))
	changes := informers.NewSharedInformerFactoryWithOptions(c.client, 0, informers.WithNamespace(c.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ChangesConfigMap).String()
		}))
	wake := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.signal() },
		DeleteFunc: func(any) { c.signal() },
		UpdateFunc: func(before, after any) {
			b, okB := before.(metav1.Object)
			a, okA := after.(metav1.Object)
			// A renewal alone is no news.
			if okA && okB && b.GetAnnotations()[ProgressAnnotation] == a.GetAnnotations()[ProgressAnnotation] {
				if _, lease := after.(*coordinationv1.Lease); lease {
					return
				}
			}
			c.signal()
		},
	}
	if _, err := replicas.Coordination().V1().Leases().Informer().AddEventHandler(wake); err != nil {
		c.log.Error("watching the replicas' Leases", secretsource.LogErr, err)
	}
	if _, err := changes.Core().V1().ConfigMaps().Informer().AddEventHandler(wake); err != nil {
		c.log.Error("watching the CA changes' ConfigMap", secretsource.LogErr, err)
	}
	replicas.Start(ctx.Done())
	changes.Start(ctx.Done())
	go func() {
		<-ctx.Done()
		replicas.Shutdown()
		changes.Shutdown()
	}()
}

func (c *Cluster) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Wake implements cluster.Backend.
func (c *Cluster) Wake() <-chan struct{} { return c.wake }

func leaseName(id string) string { return ReplicaLeasePrefix + id }

// Publish implements cluster.Backend.
func (c *Cluster) Publish(ctx context.Context, id string, progress []byte, lease time.Duration) error {
	api := c.client.CoordinationV1().Leases(c.namespace)
	seconds := int32(math.Ceil(lease.Seconds()))
	now := metav1.NewMicroTime(c.now())
	got, err := api.Get(ctx, leaseName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name: leaseName(id), Namespace: c.namespace,
				Labels:      map[string]string{RoleLabel: "replica", "app.kubernetes.io/managed-by": "meshsds"},
				Annotations: map[string]string{ProgressAnnotation: string(progress)},
			},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &id, LeaseDurationSeconds: &seconds, AcquireTime: &now, RenewTime: &now},
		}
		if _, err := api.Create(ctx, l, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating replica Lease %s/%s: %w", c.namespace, l.Name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading replica Lease %s/%s: %w", c.namespace, leaseName(id), err)
	}
	if got.Annotations == nil {
		got.Annotations = map[string]string{}
	}
	got.Annotations[ProgressAnnotation] = string(progress)
	got.Spec.HolderIdentity, got.Spec.LeaseDurationSeconds, got.Spec.RenewTime = &id, &seconds, &now
	if _, err := api.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("renewing replica Lease %s/%s: %w", c.namespace, got.Name, err)
	}
	return nil
}

// Leave implements cluster.Backend.
func (c *Cluster) Leave(ctx context.Context, id string) error {
	err := c.client.CoordinationV1().Leases(c.namespace).Delete(ctx, leaseName(id), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting replica Lease %s/%s: %w", c.namespace, leaseName(id), err)
	}
	return nil
}

// Load implements cluster.Backend. A Lease is live until its renew time
// plus its duration, by this replica's clock.
//
// It reads the API server, not the informers' caches, which may lag this
// replica's own last write: a coordinator must see what it wrote.
func (c *Cluster) Load(ctx context.Context) (cluster.State, error) {
	st := cluster.State{Changes: map[string]cluster.ChangeRecord{}}
	leases, cm, err := c.read(ctx)
	if err != nil {
		return st, err
	}
	now := c.now()
	for _, l := range leases {
		if remaining := leaseRemaining(l, now); remaining > 0 {
			id := strings.TrimPrefix(l.Name, ReplicaLeasePrefix)
			st.Replicas = append(st.Replicas, cluster.ReplicaRecord{ID: id, Progress: []byte(l.Annotations[ProgressAnnotation]), Remaining: remaining})
		}
	}
	if cm == nil {
		return st, nil
	}
	for mesh, v := range cm.Data {
		var e changeEntry
		if err := json.Unmarshal([]byte(v), &e); err != nil {
			c.log.Warn("ignoring an unreadable CA change", secretsource.LogMesh, mesh, secretsource.LogErr, err)
			continue
		}
		st.Changes[mesh] = cluster.ChangeRecord{Change: e.Change, Version: e.Version}
	}
	return st, nil
}

// read returns the replicas' Leases and the changes' ConfigMap (nil when
// there is none).
func (c *Cluster) read(ctx context.Context) ([]*coordinationv1.Lease, *corev1.ConfigMap, error) {
	selector := labels.Set{RoleLabel: "replica"}.AsSelector()
	list, err := c.client.CoordinationV1().Leases(c.namespace).List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
	if err != nil {
		return nil, nil, fmt.Errorf("listing replica Leases in %s: %w", c.namespace, err)
	}
	leases := make([]*coordinationv1.Lease, len(list.Items))
	for i := range list.Items {
		leases[i] = &list.Items[i]
	}
	cm, err := c.client.CoreV1().ConfigMaps(c.namespace).Get(ctx, ChangesConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return leases, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading ConfigMap %s/%s: %w", c.namespace, ChangesConfigMap, err)
	}
	return leases, cm, nil
}

func leaseRemaining(l *coordinationv1.Lease, now time.Time) time.Duration {
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return 0
	}
	return l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second).Sub(now)
}

// changeEntry is a mesh's value in the ConfigMap.
type changeEntry struct {
	Version int64           `json:"version"`
	Change  json.RawMessage `json:"change"`
}

// SetChange implements cluster.Backend: the ConfigMap's resourceVersion
// makes the write a compare-and-swap of the whole map; the mesh's version
// is checked in it.
func (c *Cluster) SetChange(ctx context.Context, mesh string, change []byte, version int64) (bool, error) {
	api := c.client.CoreV1().ConfigMaps(c.namespace)
	value, err := json.Marshal(changeEntry{Version: version + 1, Change: change})
	if err != nil {
		return false, err
	}
	for range setChangeAttempts {
		cm, err := api.Get(ctx, ChangesConfigMap, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if version != 0 {
				return false, nil
			}
			cm = &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: ChangesConfigMap, Namespace: c.namespace, Labels: map[string]string{"app.kubernetes.io/managed-by": "meshsds"}},
				Data:       map[string]string{mesh: string(value)},
			}
			_, err = api.Create(ctx, cm, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			if err != nil {
				return false, fmt.Errorf("creating ConfigMap %s/%s: %w", c.namespace, ChangesConfigMap, err)
			}
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("reading ConfigMap %s/%s: %w", c.namespace, ChangesConfigMap, err)
		}
		var stored int64
		if v, ok := cm.Data[mesh]; ok {
			var e changeEntry
			if err := json.Unmarshal([]byte(v), &e); err == nil {
				stored = e.Version
			}
		}
		if stored != version {
			return false, nil
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[mesh] = string(value)
		_, err = api.Update(ctx, cm, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			continue // another mesh's write, or ours lost: read again
		}
		if err != nil {
			return false, fmt.Errorf("writing ConfigMap %s/%s: %w", c.namespace, ChangesConfigMap, err)
		}
		return true, nil
	}
	return false, nil
}

// PruneReplicas deletes the Leases of replicas whose lease expired more
// than ago ago: a leader's housekeeping.
func (c *Cluster) PruneReplicas(ctx context.Context, ago time.Duration) error {
	api := c.client.CoordinationV1().Leases(c.namespace)
	leases, err := api.List(ctx, metav1.ListOptions{LabelSelector: labels.Set{RoleLabel: "replica"}.String()})
	if err != nil {
		return fmt.Errorf("listing replica Leases in %s: %w", c.namespace, err)
	}
	now := c.now()
	var errs []error
	for _, l := range leases.Items {
		if leaseRemaining(&l, now) < -ago {
			err := api.Delete(ctx, l.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &l.ResourceVersion}})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Elector returns the election of a leader among the replicas: client-go's
// leader election on the Lease LeaderLease. A leader that dies is replaced
// once its lease expires (lease); one that stops cleanly hands over at
// once.
func (c *Cluster) Elector(lease time.Duration) cluster.Elector {
	return &kubeElector{c: c, lease: lease}
}

type kubeElector struct {
	c     *Cluster
	lease time.Duration
}

func (e *kubeElector) Lead(ctx context.Context, id string, lead func(context.Context)) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: LeaderLease, Namespace: e.c.namespace},
		Client:     e.c.client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	for ctx.Err() == nil {
		// client-go calls OnStartedLeading on a goroutine of its own and
		// does not wait for it; lead runs here instead, so that a term
		// ends before the next campaign.
		acquired := make(chan context.Context, 1)
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   e.lease,
			RenewDeadline:   e.lease * 2 / 3,
			RetryPeriod:     e.lease / 6,
			ReleaseOnCancel: true,
			Name:            LeaderLease,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) { acquired <- lctx },
				OnStoppedLeading: func() {},
			},
		})
		if err != nil {
			return fmt.Errorf("leader election: %w", err)
		}
		ran := make(chan struct{})
		go func() {
			defer close(ran)
			le.Run(ctx) // returns when the leadership is lost or ctx ends
		}()
		select {
		case lctx := <-acquired:
			lead(lctx)
		case <-ran:
		}
		<-ran
	}
	return nil
}

// DeleteOrphanedBuiltinCAs deletes the builtin CA Secrets this source
// generated (label app.kubernetes.io/managed-by=meshsds) for meshes for
// which exists is false, and returns their names. Those owned by a Mesh
// object are left to Kubernetes' garbage collector; the others belong to
// meshes defined elsewhere (files, the admin API).
func (s *Source) DeleteOrphanedBuiltinCAs(ctx context.Context, exists func(mesh string) bool) ([]string, error) {
	api := s.client.CoreV1().Secrets(s.namespace)
	list, err := api.List(ctx, metav1.ListOptions{LabelSelector: labels.Set{"app.kubernetes.io/managed-by": "meshsds"}.String()})
	if err != nil {
		return nil, fmt.Errorf("listing generated Secrets in %s: %w", s.namespace, err)
	}
	var deleted []string
	for _, sec := range list.Items {
		mesh := sec.Labels[MeshLabel]
		if mesh == "" || len(sec.OwnerReferences) > 0 || !meshconfig.IsBuiltinSecretName(mesh, sec.Name) || exists(mesh) {
			continue
		}
		err := api.Delete(ctx, sec.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &sec.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return deleted, fmt.Errorf("deleting Secret %s/%s: %w", s.namespace, sec.Name, err)
		}
		deleted = append(deleted, s.namespace+"/"+sec.Name)
	}
	return deleted, nil
}
