package web

import (
	"context"
	"io"
	"time"
)

// StatusSource is what the dashboard shows; the appliance fills it from its own status.
type StatusSource interface {
	Dashboard() Dashboard
}

// Dashboard is the appliance's state at a glance.
type Dashboard struct {
	Cameras []CameraStatus
	Disk    DiskStatus
	Alarms  []Alarm
}

// CameraStatus is one camera's recording state.
type CameraStatus struct {
	Name      string
	Recording bool
	// State is a short word: "recording", "video loss", "connecting"...
	State     string
	LastWrite time.Time
	Bytes     int64
}

// DiskStatus is the recording file system's use.
type DiskStatus struct {
	Path       string
	UsedBytes  uint64
	TotalBytes uint64
}

// Alarm is an event an operator should see.
type Alarm struct {
	Time   time.Time
	Camera string
	Kind   string
	Text   string
}

// Recordings lists what was recorded; the appliance fills it from its index.
type Recordings interface {
	Segments(camera string, from, to time.Time) ([]Segment, error)
}

// Segment is one recorded span.
type Segment struct {
	Start, End time.Time
	Bytes      int64
}

// ExportRequest is an export the access control allowed (and, where policy asks, a second person approved).
type ExportRequest struct {
	// Camera is the camera of a single-camera export; Cameras lists the cameras of an export of several
	// over the one range (each allowed on its own), in the order asked for.
	Camera     string
	Cameras    []string
	From, To   time.Time
	User       string // the exporting operator
	Reason     string
	ApprovedBy string // the approver under dual authorization, or empty
	// Passphrase, if set, encrypts the export with age (scrypt); the receiver opens it with age or nvr
	// verify. It is never logged, stored or put in the file name.
	Passphrase []byte
}

// Exporter writes an export to w; the appliance fills it with the evidence exporter.
type Exporter interface {
	Export(ctx context.Context, req ExportRequest, w io.Writer) error
}

// Percent returns the used share of the disk in percent.
func (d DiskStatus) Percent() float64 {
	if d.TotalBytes == 0 {
		return 0
	}
	return 100 * float64(d.UsedBytes) / float64(d.TotalBytes)
}

// DeleteRequest is a deletion of recordings the access control allowed (and, where policy asks, a second
// person approved).
type DeleteRequest struct {
	Camera     string
	From, To   time.Time
	User       string
	Reason     string
	ApprovedBy string
}

// Deleter deletes the recordings of a camera in a range and says how many segments went; the appliance
// fills it from its index (segments under an evidence hold are never deleted).
type Deleter interface {
	Delete(ctx context.Context, req DeleteRequest) (int, error)
}

// ConfigSource shows the appliance's configuration (never its secrets) to holders of the
// configuration-view right.
type ConfigSource interface {
	Config() []ConfigItem
}

// ConfigItem is one shown setting.
type ConfigItem struct {
	Section, Name, Value string
}
