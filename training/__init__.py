"""Training, evaluation and export for MLPER and MPA-FER. Imports the same model code as the node (ros_fer)."""
