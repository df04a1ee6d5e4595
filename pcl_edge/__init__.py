"""pcl-edge: Population-based Continual Learning for edge GPUs.

Importing the package does no work: sub-packages are imported where they are used, so the device
side (`pcl_edge.runtime`) never pulls torch in.
"""

__version__ = "0.1.0"
