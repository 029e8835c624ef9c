// memberlist-peer: one hashicorp/memberlist node that speaks enough of `mesh up`'s
// command line and status JSON for `mesh bench membership --peer memberlist` to
// measure it with the same harness, side by side with Agent Mesh.
//
// It runs memberlist with its stock DefaultLANConfig (the reference the issue
// names); only the addresses and the node name are set. Events come from
// memberlist's EventDelegate (join, dead, left); memberlist reports no suspicion
// event, so the peer's "first suspicion" is null.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
)

type event struct {
	AtMs       int64    `json:"at_ms"`
	Subject    string   `json:"subject"`
	Generation uint64   `json:"generation"`
	Type       string   `json:"type"`
	By         []string `json:"by"`
}

type state struct {
	mu      sync.Mutex
	started time.Time
	events  []event
}

func (s *state) add(kind string, n *memberlist.Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, event{
		AtMs:       time.Since(s.started).Milliseconds(),
		Subject:    n.Name,
		Generation: generationOf(n),
		Type:       kind,
		By:         []string{},
	})
	if len(s.events) > 256 {
		s.events = s.events[len(s.events)-256:]
	}
}

func generationOf(n *memberlist.Node) uint64 {
	g, _ := strconv.ParseUint(string(n.Meta), 10, 64)
	return g
}

type events struct{ s *state }

func (e events) NotifyJoin(n *memberlist.Node) { e.s.add("joined", n) }
func (e events) NotifyLeave(n *memberlist.Node) {
	if n.State == memberlist.StateLeft {
		e.s.add("left", n)
	} else {
		e.s.add("dead", n)
	}
}
func (e events) NotifyUpdate(n *memberlist.Node) {}

type meta struct{ generation string }

func (m meta) NodeMeta(limit int) []byte                  { return []byte(m.generation) }
func (m meta) NotifyMsg([]byte)                           {}
func (m meta) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (m meta) LocalState(join bool) []byte                { return nil }
func (m meta) MergeRemoteState(buf []byte, join bool)     {}

func main() {
	if len(os.Args) < 2 || os.Args[1] != "up" {
		fmt.Fprintln(os.Stderr, "usage: memberlist-peer up --node-id NAME --bind HOST:PORT --http HOST:PORT --data-dir DIR [--join A,B]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	name := fs.String("node-id", "", "node name")
	bind := fs.String("bind", "127.0.0.1:0", "gossip address")
	httpAddr := fs.String("http", "127.0.0.1:0", "status address")
	dataDir := fs.String("data-dir", ".", "where node.json goes")
	join := fs.String("join", "", "seeds")
	fs.String("profile", "lan", "ignored: memberlist's DefaultLANConfig is used")
	parent := fs.Int("parent-pid", 0, "leave when this process is gone")
	fs.Parse(os.Args[2:])

	st := &state{started: time.Now()}
	generation := strconv.FormatInt(time.Now().UnixMilli(), 10)
	host, portStr, err := net.SplitHostPort(*bind)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad --bind:", err)
		os.Exit(2)
	}
	port, _ := strconv.Atoi(portStr)

	cfg := memberlist.DefaultLANConfig()
	cfg.Name = *name
	cfg.BindAddr = host
	cfg.BindPort = port
	cfg.AdvertiseAddr = host
	if port != 0 {
		// DefaultLANConfig advertises 7946 unless told otherwise.
		cfg.AdvertisePort = port
	}
	cfg.Events = events{st}
	cfg.Delegate = meta{generation}
	cfg.LogOutput = ioutil.Discard
	list, err := memberlist.Create(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "memberlist:", err)
		os.Exit(1)
	}
	if *join != "" {
		if _, err := list.Join(strings.Split(*join, ",")); err != nil {
			fmt.Fprintln(os.Stderr, "join:", err)
		}
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/v1/status", func(w http.ResponseWriter, r *http.Request) {
		type member struct {
			ID         string `json:"id"`
			Generation uint64 `json:"generation"`
			State      string `json:"state"`
		}
		members := []member{}
		for _, n := range list.Members() {
			members = append(members, member{n.Name, generationOf(n), "alive"})
		}
		st.mu.Lock()
		evs := append([]event(nil), st.events...)
		st.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]interface{}{
			"node_id":   *name,
			"uptime_ms": time.Since(st.started).Milliseconds(),
			"mode":      "n/a",
			"members":   members,
			"events":    evs,
			"health":    map[string]interface{}{"resident_bytes": nil, "cpu_percent": nil},
		})
	})
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "http:", err)
		os.Exit(1)
	}
	go http.Serve(ln, mux)

	local := list.LocalNode()
	info, _ := json.Marshal(map[string]interface{}{
		"node_id":    *name,
		"gossip":     net.JoinHostPort(local.Addr.String(), strconv.Itoa(int(local.Port))),
		"http":       ln.Addr().String(),
		"pid":        os.Getpid(),
		"generation": generationOf(local),
	})
	tmp := filepath.Join(*dataDir, "node.json.tmp")
	ioutil.WriteFile(tmp, info, 0o644)
	os.Rename(tmp, filepath.Join(*dataDir, "node.json"))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	gone := make(chan struct{})
	if *parent > 0 {
		go func() {
			for {
				time.Sleep(500 * time.Millisecond)
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", *parent)); err != nil {
					close(gone)
					return
				}
			}
		}()
	}
	select {
	case <-sig:
	case <-gone:
	}
	list.Leave(2 * time.Second)
	list.Shutdown()
}
