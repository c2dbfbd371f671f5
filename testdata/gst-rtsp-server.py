#!/usr/bin/python3
"""A third-party camera for tests: GStreamer's RTSP server with a live H.264 (or H.265) test pattern.

Usage: gst-rtsp-server.py PORT [h264|h265]
Listens on 127.0.0.1:PORT and serves rtsp://127.0.0.1:PORT/cam. Prints "ready" once listening.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
port = sys.argv[1]
codec = sys.argv[2] if len(sys.argv) > 2 else "h264"
if codec == "h265":
    enc = "x265enc tune=zerolatency key-int-max=25 speed-preset=ultrafast ! rtph265pay name=pay0 pt=96 config-interval=1"
else:
    enc = "x264enc tune=zerolatency key-int-max=25 speed-preset=ultrafast bitrate=2000 ! rtph264pay name=pay0 pt=96 config-interval=1"
launch = (
    "( videotestsrc is-live=true pattern=smpte ! video/x-raw,width=640,height=360,framerate=25/1 ! "
    + enc
    + " )"
)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(launch)
factory.set_shared(True)
server.get_mount_points().add_factory("/cam", factory)
if server.attach(None) == 0:
    print("cannot listen on port " + port, flush=True)
    sys.exit(1)
print("ready", flush=True)
GLib.MainLoop().run()
