# Tenantry — see README.md. `make dev` runs the whole system locally; `make test` runs every test.

IMG ?= tenantry:dev
CONTROLLER_TOOLS_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.8.1
LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
GOLANGCI_LINT_VERSION ?= v2.15.0
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
KREW_VERSION ?= v0.4.3
KREW ?= $(LOCALBIN)/krew-$(KREW_VERSION)
GO_TEST_FLAGS ?= -count=1
BENCH_TENANTS ?= 100 1000
BENCH_APP_TENANTS ?= 1000
BENCH_FLEET_TENANTS ?= 1000
BENCH_RESTART_TENANTS ?= 10000

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRDs and RBAC from the Go markers, and copy them (and the alerts and dashboard) into the chart.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd webhook paths="./..." output:crd:artifacts:config=config/crd/bases
	@rm -rf dist/chart/files/crds && mkdir -p dist/chart/files/crds
	@cp config/crd/bases/*.yaml dist/chart/files/crds/
	@cp config/rbac/role.yaml dist/chart/files/manager-role.yaml
	@cp config/prometheus/rules.yaml dist/chart/files/alerts.yaml
	@cp config/grafana/tenantry-dashboard.json dist/chart/files/tenantry-dashboard.json

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate the DeepCopy methods.
	$(CONTROLLER_GEN) object paths="./..."

.PHONY: fmt
fmt: ## go fmt.
	go fmt ./...

.PHONY: vet
vet: ## go vet.
	go vet ./...

.PHONY: envtest-assets
envtest-assets: ## Print the directory holding etcd and kube-apiserver, getting them first.
	@hack/envtest-assets.sh

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint with .golangci.yml (govet, staticcheck, errcheck, revive and more).
	$(GOLANGCI_LINT) run ./...

.PHONY: test
test: manifests generate vet lint citus $(KREW) ## Run every test: the linter, unit, PostgreSQL, envtest integration, S3 (SeaweedFS), Citus and browser tests.
	@assets=$$(hack/envtest-assets.sh) && weed=$$(hack/seaweedfs.sh) && KUBEBUILDER_ASSETS=$$assets KREW=$(KREW) WEED=$$weed go test $(GO_TEST_FLAGS) ./...

.PHONY: test-citus
test-citus: citus ## Run the Citus suite alone: the operator and the app on a coordinator and two workers.
	@assets=$$(hack/envtest-assets.sh) && KUBEBUILDER_ASSETS=$$assets go test $(GO_TEST_FLAGS) -count=1 -run 'TestCitus' ./internal/controller

.PHONY: bench
bench: bench-onboard bench-app bench-fleet bench-restart bench-drift bench-apiserver bench-shards bench-citus bench-lifecycle ## Run every benchmark and print the figures for docs/benchmarks.md.

.PHONY: bench-onboard
bench-onboard: ## Onboarding: apply→Ready latency, 100 and 1,000 tenants at once, against a psql floor.
	@assets=$$(hack/envtest-assets.sh) && KUBEBUILDER_ASSETS=$$assets go run ./hack/bench onboard $(BENCH_TENANTS)

.PHONY: bench-lifecycle
bench-lifecycle: ## Backup, restore and clone of one tenant of 1,000,000 expenses (BENCH_EXPENSES), against pg_dump and pg_restore.
	@assets=$$(hack/envtest-assets.sh) && weed=$$(hack/seaweedfs.sh) && KUBEBUILDER_ASSETS=$$assets WEED=$$weed go run ./hack/bench lifecycle $(or $(BENCH_EXPENSES),1000000)

.PHONY: bench-fleet
bench-fleet: ## A release with one new migration across 1,000 tenants, against psql.
	@assets=$$(hack/envtest-assets.sh) && KUBEBUILDER_ASSETS=$$assets go run ./hack/bench fleet $(BENCH_FLEET_TENANTS)

.PHONY: bench-restart
bench-restart: ## Operator restart with 10,000 Ready tenants: time, SQL sent, peak memory.
	@assets=$$(hack/envtest-assets.sh) && KUBEBUILDER_ASSETS=$$assets go run ./hack/bench restart $(BENCH_RESTART_TENANTS)

.PHONY: bench-drift
bench-drift: ## A full drift pass over 10,000 Ready tenants, one in a hundred planted (BENCH_DRIFT_TENANTS).
	@assets=$$(hack/envtest-assets.sh) && KUBEBUILDER_ASSETS=$$assets go run ./hack/bench drift $(or $(BENCH_DRIFT_TENANTS),10000)

.PHONY: bench-apiserver
bench-apiserver: ## What one Tenant status patch costs the API server, with and without the CEL rules.
	@assets=$$(hack/envtest-assets.sh) && KUBEBUILDER_ASSETS=$$assets go run ./hack/bench apiserver 300

.PHONY: bench-shards
bench-shards: ## Two PostgreSQL servers: onboarding and app throughput over shards, and a 100,000-expense tenant moved under load (BENCH_SHARDS_TENANTS; BENCH_SHARDS_BASELINE=off skips the one-server run).
	@assets=$$(hack/envtest-assets.sh) && KUBEBUILDER_ASSETS=$$assets go run ./hack/bench shards $(or $(BENCH_SHARDS_TENANTS),1000)

.PHONY: bench-citus
bench-citus: citus ## Citus against plain PostgreSQL: onboarding, app throughput, a release, a rebalance under writes (BENCH_CITUS_TENANTS).
	@assets=$$(hack/envtest-assets.sh) && KUBEBUILDER_ASSETS=$$assets go run ./hack/bench citus $(or $(BENCH_CITUS_TENANTS),1000)

.PHONY: bench-app
bench-app: ## The app under load: 1 tenant against 1,000, direct and through PgBouncer.
	@go run ./hack/bench app $(BENCH_APP_TENANTS)

.PHONY: dev
dev: manifests ## Run everything locally: API server, PostgreSQL, operator, app and samples (Ctrl-C stops).
	@go run ./hack/dev

.PHONY: dev-clean
dev-clean: ## Remove the state of make dev (.dev/), stopping its PostgreSQL if it still runs.
	@if [ -f .dev/postgres/data/postmaster.pid ]; then \
		if [ "$$(id -u)" = 0 ]; then runuser -u postgres -- $$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/pg_ctl -D .dev/postgres/data -m fast stop; \
		else pg_ctl -D .dev/postgres/data -m fast stop 2>/dev/null || $$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/pg_ctl -D .dev/postgres/data -m fast stop; fi; \
	fi; true
	rm -rf .dev

##@ Build

.PHONY: citus
citus: ## Build Citus 13.2.2 (from CITUS_TARBALL, else downloaded) into PostgreSQL 15, cached in ~/.cache/tenantry (root; build dependencies in hack/citus.sh).
	@hack/citus.sh >/dev/null

.PHONY: build
build: generate ## Build every binary into bin/ (static, with the Dockerfile's commands).
	CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o bin/manager ./cmd/manager
	CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o bin/app ./cmd/app
	$(MAKE) plugin

.PHONY: plugin
plugin: ## Build the kubectl plugin into bin/ (kubectl-tenantry, and kubectl_complete-tenantry for completion): put bin/ on PATH.
	go build -o bin/kubectl-tenantry ./cmd/kubectl-tenantry
	cp cmd/kubectl-tenantry/kubectl_complete-tenantry bin/

.PHONY: docker-build
docker-build: ## Build the image (needs a Docker engine).
	docker build -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the image.
	docker push $(IMG)

##@ Deployment

.PHONY: build-installer
build-installer: manifests generate $(KUSTOMIZE) ## Write dist/install.yaml (CRDs, RBAC and the operator with image IMG, in one file) and dist/krew/ (the plugin's krew manifest and archives; hack/krew.sh).
	mkdir -p dist
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default > dist/install.yaml
	hack/krew.sh

.PHONY: install
install: manifests $(KUSTOMIZE) ## Install the CRDs into the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/crd | kubectl apply --server-side -f -

.PHONY: uninstall
uninstall: manifests $(KUSTOMIZE) ## Remove the CRDs.
	$(KUSTOMIZE) build config/crd | kubectl delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests $(KUSTOMIZE) ## Deploy the operator with image IMG.
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | kubectl apply --server-side -f -

.PHONY: undeploy
undeploy: $(KUSTOMIZE) ## Remove the operator.
	$(KUSTOMIZE) build config/default | kubectl delete --ignore-not-found -f -

##@ Helm

HELM ?= helm
HELM_NAMESPACE ?= tenantry-system
HELM_RELEASE ?= tenantry

.PHONY: helm-deploy
helm-deploy: ## Install or upgrade the chart (dist/chart) with image IMG, with a helm binary of your own.
	IMG="$(IMG)"; $(HELM) upgrade --install $(HELM_RELEASE) dist/chart --namespace $(HELM_NAMESPACE) --create-namespace \
		--set manager.image.repository=$${IMG%:*} --set manager.image.tag=$${IMG##*:} --wait --timeout 5m

.PHONY: helm-uninstall
helm-uninstall: ## Uninstall the chart (the CRDs, and so every Tenant and ExpenseApp, stay).
	$(HELM) uninstall $(HELM_RELEASE) --namespace $(HELM_NAMESPACE)

$(CONTROLLER_GEN):
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $@

$(GOLANGCI_LINT):
	GOBIN=$(LOCALBIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(LOCALBIN)/golangci-lint $@

$(KREW):
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/krew/cmd/krew@$(KREW_VERSION)
	mv $(LOCALBIN)/krew $@

$(KUSTOMIZE):
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	mv $(LOCALBIN)/kustomize $@
