"""real3d: one portrait photo + speech or a driving video -> a talking-portrait video (Real3D-Portrait).

Importing the package sets one process-wide default before OpenCV starts its thread pool: OpenCV's worker
threads otherwise spin for a while after every parallel call before they sleep, and on a 2-core CPU that spinning
takes the second core from the threads that track the driver and encode the video. A value already in the
environment wins.
"""

import os

os.environ.setdefault("OPENCV_THREAD_POOL_ACTIVE_WAIT_PAYLOAD", "0")
os.environ.setdefault("OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER", "0")
