package config

// Telemetry configures the observe stage (serve's --telemetry flags).
type Telemetry struct {
	// Enabled is nil when the key is absent, so the flag's default stands.
	Enabled        *bool    `yaml:"enabled"`
	Flush          Duration `yaml:"flush"`
	MaxLabelValues int      `yaml:"max_label_values"`
	// LabelAllow holds LABEL=VALUE entries, as --metrics-label-allow.
	LabelAllow []string `yaml:"label_allow"`
}

// Lineage configures the lineage graph and its OpenLineage export.
type Lineage struct {
	DataDir     string      `yaml:"data_dir"`
	Retention   Duration    `yaml:"retention"`
	OpenLineage OpenLineage `yaml:"openlineage"`
}

// OpenLineage configures pushing run events to an OpenLineage endpoint.
type OpenLineage struct {
	URL       string   `yaml:"url"`
	Every     Duration `yaml:"every"`
	Namespace string   `yaml:"namespace"`
}
