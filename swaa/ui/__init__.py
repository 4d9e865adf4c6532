"""The notebooks face: plots, the ipywidgets tuning panel, the headless notebook runner, the environment report."""
