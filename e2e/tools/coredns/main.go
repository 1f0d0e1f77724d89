// Command coredns is CoreDNS with only the plugins the local cluster's Corefile uses.
//
// CoreDNS's own main links every plugin (cloud DNS providers, etcd, dnstap, QUIC, ...), which
// makes the cold build several times longer on a 2-core machine. A custom build is CoreDNS's
// documented way to choose plugins: import them and call coremain.Run. The blank imports also
// pin the module in go.mod/go.sum; e2e/build-tools.sh builds this package.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() { coremain.Run() }
