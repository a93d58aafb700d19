"""Card layer: image catalogue and cache, the writer, boot-partition provisioning."""
