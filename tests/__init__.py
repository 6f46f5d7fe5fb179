"""The test suite; its folders mirror the source (detcommon/, double_head/, decoupled_rcnn/, tools/, docs/)."""
