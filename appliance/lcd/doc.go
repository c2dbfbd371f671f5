// Package lcd owns the appliance's local display: the screen model (pages for network and first-boot setup,
// recording, storage and alarms), the way the buttons page through it, and the drivers that put a page on a
// panel: an HD44780 character display behind a PCF8574 I²C backpack, a framebuffer panel (/dev/fbN) and a
// text console for boards without a panel.
//
// The display is where an installer reads the one-time setup code, so this package is one of the two places
// (with the local console) that ever hold it in clear. It must never send the code to a logger, a network
// socket or an error message, must never show a code once an administrator exists, and must never block or
// fail the recording path: a broken panel is logged and retried, nothing more.
//
// The appliance's state reaches the display through [Source] and the setup code through [SetupCodeSource];
// both are interfaces defined here and filled by the wiring in package appliance, so lcd imports only leaf
// packages (board).
package lcd
