package controller

import (
	"os"
	"testing"

	clientfeatures "k8s.io/client-go/features"
)

// The operator's informers list in pages unless KUBE_FEATURE_WatchListClient says otherwise.
func TestListInPages(t *testing.T) {
	if _, set := os.LookupEnv("KUBE_FEATURE_WatchListClient"); set {
		t.Skip("KUBE_FEATURE_WatchListClient is set: it decides")
	}
	ListInPages()
	if clientfeatures.FeatureGates().Enabled(clientfeatures.WatchListClient) {
		t.Fatal("WatchListClient is still enabled: the informers would stream their initial state")
	}
}
