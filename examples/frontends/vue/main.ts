import { createApp } from "vue";

import Generate from "./Generate.vue";

createApp(Generate).mount("#app");
