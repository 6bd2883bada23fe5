package quota

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/flowgate/flowgate/config"
)

const (
	upperUUID = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
	lowerUUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
)

// fileConfig is the config file of the admin API tests: one listed
// workflow, by an upper-case UUID.
func fileConfig() (config.Quota, config.QuotaPolicy) {
	p := config.QuotaPolicy{Budgets: []config.Budget{execBudget(5, 24*time.Hour)}}
	return config.Quota{OnRedisError: "open", Workflows: map[string]config.QuotaPolicy{upperUUID: p}}, p
}

func configOf(e *Enforcer, wf string) (config.QuotaPolicy, bool) {
	p := e.Policy(wf)
	if p == nil {
		return config.QuotaPolicy{}, false
	}
	return p.Config(), true
}

func entriesSummary(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Workflow+"="+e.Source)
	}
	return out
}

// Policies set through the admin API on one replica reach the others
// sharing Redis (each polls the version every second); a Delete brings
// the file's policy back.
func TestAdminOverridesShared(t *testing.T) {
	r := newRig(t, "redis")
	cfg, filePol := fileConfig()
	a, b := r.enforcer(cfg), r.enforcer(cfg)
	ctx := context.Background()

	if got := entriesSummary(a.Entries()); !reflect.DeepEqual(got, []string{lowerUUID + "=config"}) {
		t.Fatalf("Entries = %v", got)
	}
	if en, ok := a.Entry(upperUUID); !ok || en.Source != "config" || en.Workflow != lowerUUID || !reflect.DeepEqual(en.Policy, filePol) {
		t.Fatalf("Entry = %+v %v", en, ok)
	}
	if _, ok := a.Entry("unknown"); ok {
		t.Fatal("Entry of an unlisted workflow found")
	}

	rate := config.QuotaPolicy{Rate: &config.RateLimit{Limit: 2, Per: config.Duration(time.Minute)}, PerCaller: "ip"}
	if err := a.Put(ctx, "new-flow", rate); err != nil {
		t.Fatal(err)
	}
	if got, ok := configOf(a, "new-flow"); !ok || !reflect.DeepEqual(got, rate) {
		t.Fatalf("on the replica that put it: %+v %v; want it at once", got, ok)
	}
	eventually(t, 5*time.Second, "the other replica sees the Put", func() bool { return b.Policy("new-flow") != nil })
	if got, _ := configOf(b, "new-flow"); !reflect.DeepEqual(got, rate) {
		t.Fatalf("replica b: %+v, want %+v", got, rate)
	}

	// An admin policy replaces the file's for the same workflow.
	tight := config.QuotaPolicy{Budgets: []config.Budget{execBudget(1, time.Hour)}}
	if err := a.Put(ctx, upperUUID, tight); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the other replica sees the override", func() bool {
		got, _ := configOf(b, lowerUUID)
		return reflect.DeepEqual(got, tight)
	})
	if en, ok := b.Entry(lowerUUID); !ok || en.Source != "admin" || !reflect.DeepEqual(en.Policy, tight) {
		t.Fatalf("Entry on b = %+v %v", en, ok)
	}
	want := []string{lowerUUID + "=admin", "new-flow=admin"}
	if got := entriesSummary(b.Entries()); !reflect.DeepEqual(got, want) {
		t.Fatalf("Entries on b = %v, want %v", got, want)
	}
	// Enforced on both replicas, sharing the count.
	if d := admit(t, b, lowerUUID, ""); !d.Allowed || d.Limit != 1 {
		t.Fatalf("%+v", d)
	}
	if d := admit(t, a, lowerUUID, ""); d.Allowed || d.Limit != 1 || d.Window != "1h" {
		t.Fatalf("%+v; want refused by the admin's 1/h", d)
	}

	if ok, err := a.Delete(ctx, upperUUID); !ok || err != nil {
		t.Fatalf("Delete = %v, %v", ok, err)
	}
	if ok, err := a.Delete(ctx, upperUUID); ok || err != nil {
		t.Fatalf("second Delete = %v, %v; want false, nil", ok, err)
	}
	eventually(t, 5*time.Second, "the other replica sees the Delete", func() bool {
		got, _ := configOf(b, lowerUUID)
		return reflect.DeepEqual(got, filePol)
	})
	if en, _ := b.Entry(lowerUUID); en.Source != "config" {
		t.Fatalf("Entry after Delete = %+v", en)
	}
	want = []string{lowerUUID + "=config", "new-flow=admin"}
	if got := entriesSummary(b.Entries()); !reflect.DeepEqual(got, want) {
		t.Fatalf("Entries on b = %v, want %v", got, want)
	}
	// A third replica, started now, loads the admin's policies.
	c := r.enforcer(cfg)
	if got, ok := configOf(c, "new-flow"); !ok || !reflect.DeepEqual(got, rate) {
		t.Fatalf("a new replica: %+v %v", got, ok)
	}
}

// Without Redis or a DB, the admin API's policies live in the process.
func TestAdminOverridesInProcess(t *testing.T) {
	r := newRig(t, "memory")
	cfg, filePol := fileConfig()
	e := r.enforcer(cfg)
	ctx := context.Background()
	tight := config.QuotaPolicy{Budgets: []config.Budget{execBudget(1, time.Hour)}}
	if err := e.Put(ctx, lowerUUID, tight); err != nil {
		t.Fatal(err)
	}
	if got, _ := configOf(e, lowerUUID); !reflect.DeepEqual(got, tight) {
		t.Fatalf("%+v", got)
	}
	if got := entriesSummary(e.Entries()); !reflect.DeepEqual(got, []string{lowerUUID + "=admin"}) {
		t.Fatalf("Entries = %v", got)
	}
	if ok, err := e.Delete(ctx, lowerUUID); !ok || err != nil {
		t.Fatalf("Delete = %v, %v", ok, err)
	}
	if got, _ := configOf(e, lowerUUID); !reflect.DeepEqual(got, filePol) {
		t.Fatalf("after Delete: %+v", got)
	}
	if ok, err := e.Delete(ctx, "never-put"); ok || err != nil {
		t.Fatalf("Delete of nothing = %v, %v", ok, err)
	}
}

// With the embedded store, admin policies and budget windows outlive the
// process.
func TestBoltPersistence(t *testing.T) {
	const wf, spend = "bolt-flow", "bolt-spend"
	path := tempDBPath(t)
	clock := newTestClock(noon)
	cfg := config.Quota{OnRedisError: "open", Workflows: map[string]config.QuotaPolicy{
		spend: {Budgets: []config.Budget{{Window: config.Duration(24 * time.Hour), Tokens: 100}}},
	}}
	open := func() (*Enforcer, func()) {
		db := openDB(t, path)
		e := newEnforcer(t, Options{Config: cfg, DB: db, Now: clock.Now})
		return e, func() { e.Close(); _ = db.Close() }
	}
	ctx := context.Background()

	e1, close1 := open()
	pol := config.QuotaPolicy{Budgets: []config.Budget{execBudget(5, 24*time.Hour)}, PerCaller: "header:X-User"}
	if err := e1.Put(ctx, wf, pol); err != nil {
		t.Fatal(err)
	}
	if err := e1.Put(ctx, "gone-flow", pol); err != nil {
		t.Fatal(err)
	}
	if ok, err := e1.Delete(ctx, "gone-flow"); !ok || err != nil {
		t.Fatalf("Delete = %v, %v", ok, err)
	}
	for i := range 3 {
		if d := admit(t, e1, wf, "h:alice"); !d.Allowed {
			t.Fatalf("run %d: %+v", i, d)
		}
	}
	d := admit(t, e1, spend, "")
	e1.Settle(&d, 60, 0) // applied by Close
	close1()

	e2, close2 := open()
	if en, ok := e2.Entry(wf); !ok || en.Source != "admin" || !reflect.DeepEqual(en.Policy, pol) {
		t.Fatalf("after reopening: Entry %+v %v", en, ok)
	}
	if e2.Policy("gone-flow") != nil {
		t.Fatal("a deleted policy came back")
	}
	// The 3 executions counted before are still counted.
	for i := range 2 {
		if d := admit(t, e2, wf, "h:alice"); !d.Allowed || d.Remaining != int64(1-i) {
			t.Fatalf("run %d after reopening: %+v; want %d remaining", i+4, d, 1-i)
		}
	}
	if d := admit(t, e2, wf, "h:alice"); d.Allowed {
		t.Fatalf("6th run across a restart admitted: %+v", d)
	}
	if d := admit(t, e2, wf, "h:bob"); !d.Allowed || d.Remaining != 4 {
		t.Fatalf("another caller: %+v", d)
	}
	d = admit(t, e2, spend, "")
	if !d.Allowed {
		t.Fatalf("60 of 100 tokens: %+v", d)
	}
	e2.Settle(&d, 40, 0)
	flush(t, e2)
	if d := admit(t, e2, spend, ""); d.Allowed || d.What != "tokens" {
		t.Fatalf("tokens settled before the restart were lost: %+v", d)
	}
	close2()

	// The next day the ended windows are dropped.
	clock.Advance(24 * time.Hour)
	e3, close3 := open()
	defer close3()
	if d := admit(t, e3, wf, "h:alice"); !d.Allowed || d.Remaining != 4 {
		t.Fatalf("a new day: %+v", d)
	}
	if d := admit(t, e3, spend, ""); !d.Allowed {
		t.Fatalf("a new day: %+v", d)
	}
}

// A stored policy that fails Check (written by hand, or by another
// version) is ignored, on the periodic reload and on a Put's.
func TestInvalidStoredPolicyIgnored(t *testing.T) {
	r := newRig(t, "redis")
	cfg, filePol := fileConfig()
	e := r.enforcer(cfg)
	rdb := newRedisClient(t, r.srv.Addr())
	ctx := context.Background()
	bad := `{"budgets":[{"window":"0s","executions":1}]}`
	if err := rdb.HSet(ctx, redisPoliciesKey, lowerUUID, bad, "broken-json", "{").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Incr(ctx, redisVersionKey).Err(); err != nil {
		t.Fatal(err)
	}
	// The periodic reload: the file's policy stays in force.
	waitVersion := func(v int64) {
		eventually(t, 5*time.Second, "the reload", func() bool { return e.set.Load().version >= v })
	}
	waitVersion(1)
	if got, _ := configOf(e, lowerUUID); !reflect.DeepEqual(got, filePol) {
		t.Fatalf("after a reload: %+v", got)
	}
	if d := admit(t, e, lowerUUID, ""); !d.Allowed {
		t.Fatalf("%+v", d)
	}
	// A Put reloads every stored policy: the invalid one stays ignored.
	if err := e.Put(ctx, "other", config.QuotaPolicy{Rate: perSecond(1, 1)}); err != nil {
		t.Fatal(err)
	}
	if en, _ := e.Entry(lowerUUID); en.Source != "config" {
		t.Fatalf("after a Put: %+v", en)
	}
	if d := admit(t, e, lowerUUID, ""); !d.Allowed {
		t.Fatalf("%+v", d)
	}
	if e.Policy("broken-json") != nil {
		t.Fatal("malformed JSON became a policy")
	}
}

// gateStore wraps an overrideStore; while armed, a load reads the store
// and then waits to be released before answering, as a slow Redis does.
type gateStore struct {
	overrideStore
	mu      sync.Mutex
	armed   bool
	loading chan struct{} // closed when an armed load has read the store
	release chan struct{}
	stored  chan struct{} // closed by the first put
	putOnce sync.Once
}

func (g *gateStore) load(ctx context.Context) (map[string]config.QuotaPolicy, int64, error) {
	g.mu.Lock()
	armed := g.armed
	g.armed = false
	g.mu.Unlock()
	m, v, err := g.overrideStore.load(ctx)
	if armed {
		close(g.loading)
		<-g.release
	}
	return m, v, err
}

func (g *gateStore) put(ctx context.Context, wf string, p config.QuotaPolicy) error {
	err := g.overrideStore.put(ctx, wf, p)
	g.putOnce.Do(func() { close(g.stored) })
	return err
}

// A periodic reload that read the store before a Put must not put the
// older policies back in force after the Put's.
func TestReloadDoesNotUndoPut(t *testing.T) {
	g := &gateStore{
		overrideStore: &memOverrides{m: map[string]config.QuotaPolicy{}},
		armed:         true,
		loading:       make(chan struct{}),
		release:       make(chan struct{}),
		stored:        make(chan struct{}),
	}
	// An Enforcer without its background goroutines, so that the test
	// makes the reload itself.
	cfg, _ := fileConfig()
	e := &Enforcer{o: Options{Config: cfg, Now: time.Now}, log: zaptest.NewLogger(t), cred: map[string]bool{}, local: newMemory(10), store: g, open: true}
	e.set.Store(e.build(nil, -1))

	reloaded := make(chan error, 1)
	go func() { reloaded <- e.reload(context.Background()) }()
	<-g.loading // the reload has read the store: no admin policies yet

	want := config.QuotaPolicy{Budgets: []config.Budget{execBudget(7, time.Hour)}}
	putDone := make(chan error, 1)
	go func() { putDone <- e.Put(context.Background(), "flow", want) }()
	<-g.stored // the policy is stored; the Put now puts it in force
	close(g.release)
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	if err := <-putDone; err != nil {
		t.Fatal(err)
	}
	if got, ok := configOf(e, "flow"); !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("after the Put returned: %+v %v; the reload undid it", got, ok)
	}
}
